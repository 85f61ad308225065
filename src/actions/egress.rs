//! Where HTTP actions may connect (`--http-action-deny-cidrs`).
//!
//! A route author chooses the URL of an HTTP action, so without a guard a route could make the operator
//! call its own admin port, the node's cloud metadata service (169.254.169.254, fd00:ec2::254) or anything
//! else only the operator's pod can reach. The check runs on the addresses a name resolves to, inside
//! the HTTP client's resolver, so the address checked is the address connected to: a name that resolves
//! to a public address when looked at and to 127.0.0.1 a moment later (DNS rebinding) cannot get around
//! it. URLs with a literal IP never reach a resolver, so [`DenyList::check_url`] covers them before the
//! request is sent. Private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) stay allowed by default: an
//! in-cluster Jira or Mattermost is normal.

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The default of `--http-action-deny-cidrs`: loopback, link-local (which holds the cloud metadata
/// address 169.254.169.254), AWS's IPv6 metadata address, "this network" and the unspecified address.
/// The pod's own addresses (`--pod-ips`) are added to any list but `none`.
pub const DEFAULT_DENY_CIDRS: &str =
    "127.0.0.0/8,::1/128,169.254.0.0/16,fe80::/10,fd00:ec2::254/128,0.0.0.0/8,::/128";

/// Networks HTTP actions may not connect to. Empty means no restriction (`none`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyList {
    nets: Vec<IpNet>,
}

/// An HTTP action was refused before any byte was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the URL's host is {addr}, inside {net}, which --http-action-deny-cidrs refuses")]
pub struct EgressDenied {
    /// The refused address (an address, never the URL, which is a secret).
    pub addr: IpAddr,
    /// The network it fell into.
    pub net: IpNet,
}

/// Parses `--http-action-deny-cidrs`: `none`, or a comma-separated list of CIDRs and bare addresses.
pub fn parse_deny_cidrs(s: &str) -> Result<DenyList, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(DenyList::default());
    }
    let mut nets = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let net = item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("`{item}` is not a CIDR (10.0.0.0/8, fe80::/10) or an address"))?;
        nets.push(net.trunc());
    }
    if nets.is_empty() {
        return Err("give at least one CIDR, or `none` to allow every address".into());
    }
    Ok(DenyList { nets })
}

/// Treats `::ffff:127.0.0.1` as `127.0.0.1`, so the IPv4 rules cannot be bypassed through IPv6.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl DenyList {
    /// Adds single addresses (the pod's own), unless the list is off.
    pub fn with_addresses(mut self, addrs: &[IpAddr]) -> Self {
        if !self.is_off() {
            self.nets
                .extend(addrs.iter().map(|a| IpNet::from(canonical(*a))));
        }
        self
    }

    /// Whether nothing is refused.
    pub fn is_off(&self) -> bool {
        self.nets.is_empty()
    }

    /// The refusal for `ip`, if it is in a denied network.
    pub fn check(&self, ip: IpAddr) -> Result<(), EgressDenied> {
        let ip = canonical(ip);
        match self.nets.iter().find(|n| n.contains(&ip)) {
            Some(net) => Err(EgressDenied {
                addr: ip,
                net: *net,
            }),
            None => Ok(()),
        }
    }

    /// Checks a URL whose host is a literal address (those skip the resolver); names pass here and are
    /// checked when they are resolved.
    pub fn check_url(&self, url: &url::Url) -> Result<(), EgressDenied> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }

    /// Keeps the allowed addresses; if none is left, the refusal of the first.
    pub fn filter(&self, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, EgressDenied> {
        let mut first_denied = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check(a.ip()) {
                Ok(()) => true,
                Err(e) => {
                    first_denied.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_denied) {
            (true, Some(denied)) => Err(denied),
            _ => Ok(allowed),
        }
    }
}

/// The system resolver with the deny list applied to every answer.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    deny: Arc<DenyList>,
}

impl GuardedResolver {
    /// A resolver refusing `deny`.
    pub fn new(deny: Arc<DenyList>) -> Self {
        GuardedResolver { deny }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let deny = self.deny.clone();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed = deny.filter(found)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The refusal inside a failed request, if the resolver refused it.
pub fn denial_in(e: &(dyn std::error::Error + 'static)) -> Option<EgressDenied> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(d) = err.downcast_ref::<EgressDenied>() {
            return Some(d.clone());
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_list() -> DenyList {
        parse_deny_cidrs(DEFAULT_DENY_CIDRS).unwrap()
    }

    #[test]
    fn loopback_metadata_and_link_local_are_denied_private_ranges_are_not() {
        let deny = default_list();
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "169.254.169.254",
            "fd00:ec2::254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(
                deny.check(ip.parse().unwrap()).is_err(),
                "{ip} must be denied"
            );
        }
        for ip in [
            "10.0.0.7",
            "172.16.3.4",
            "192.168.1.1",
            "fd12::1",
            "8.8.8.8",
        ] {
            assert!(deny.check(ip.parse().unwrap()).is_ok(), "{ip} is allowed");
        }
    }

    #[test]
    fn none_turns_the_guard_off_and_pod_addresses_join_any_other_list() {
        let off = parse_deny_cidrs("none").unwrap();
        assert!(off.is_off());
        let pod: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(off.clone().with_addresses(&[pod]).check(pod).is_ok());
        let on = default_list().with_addresses(&[pod]);
        assert!(on.check(pod).is_err());
        assert!(on.check("10.1.2.4".parse().unwrap()).is_ok());
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry() {
        let err = parse_deny_cidrs("10.0.0.0/8, not-a-net").unwrap_err();
        assert!(err.contains("not-a-net"), "{err}");
        assert!(parse_deny_cidrs(" , ").is_err());
        assert_eq!(
            parse_deny_cidrs("10.9.9.9")
                .unwrap()
                .check("10.9.9.9".parse().unwrap()),
            Err(EgressDenied {
                addr: "10.9.9.9".parse().unwrap(),
                net: "10.9.9.9/32".parse().unwrap()
            })
        );
    }

    #[test]
    fn literal_addresses_in_urls_are_checked_names_are_left_to_the_resolver() {
        let deny = default_list();
        for url in [
            "http://127.0.0.1:9090/metrics",
            "http://127.1/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0x7f000001/",
        ] {
            assert!(
                deny.check_url(&url::Url::parse(url).unwrap()).is_err(),
                "{url}"
            );
        }
        assert!(
            deny.check_url(&url::Url::parse("http://localhost/").unwrap())
                .is_ok()
        );
    }

    #[test]
    fn resolved_answers_keep_only_allowed_addresses() {
        let deny = default_list();
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert_eq!(
            deny.filter(vec![a("127.0.0.1:0"), a("10.0.0.1:0")]),
            Ok(vec![a("10.0.0.1:0")])
        );
        assert!(deny.filter(vec![a("127.0.0.1:0"), a("[::1]:0")]).is_err());
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_to_loopback() {
        let resolver = GuardedResolver::new(Arc::new(default_list()));
        let name: Name = "localhost".parse().unwrap();
        let err = resolver.resolve(name).await.err().expect("denied");
        assert!(denial_in(err.as_ref()).is_some(), "{err}");
        let open = GuardedResolver::new(Arc::new(DenyList::default()));
        let addrs: Vec<SocketAddr> = open
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
