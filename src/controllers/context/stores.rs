//! What the controllers' watches and the receiver hand over once they started.

use crate::receiver::secret_cache::SecretId;
use crate::resources::{AscCredential, WebhookDelivery, WebhookRoute};
use kube::runtime::reflector::Store;
use std::sync::OnceLock;
use tokio::sync::{broadcast, watch};

/// The watch-fed stores the controllers share, and the receiver's recoveries from unready. Each is
/// installed once when its watch starts; later installs are ignored.
#[derive(Default)]
pub struct Stores {
    credentials: OnceLock<Store<AscCredential>>,
    routes: OnceLock<Store<WebhookRoute>>,
    unfinished: OnceLock<Store<WebhookDelivery>>,
    ready_again: OnceLock<watch::Receiver<u64>>,
    secret_observations: OnceLock<broadcast::Sender<SecretId>>,
}

impl Stores {
    /// The watched credentials, once the controllers started.
    pub fn credentials(&self) -> Option<&Store<AscCredential>> {
        self.credentials.get()
    }

    /// Hands the route controller the credential store.
    pub fn set_credentials(&self, store: Store<AscCredential>) {
        let _ = self.credentials.set(store);
    }

    /// The route controller's cache of routes, once the controllers started.
    pub fn routes(&self) -> Option<&Store<WebhookRoute>> {
        self.routes.get()
    }

    /// Hands the delivery controller the route store.
    pub fn set_routes(&self, store: Store<WebhookRoute>) {
        let _ = self.routes.set(store);
    }

    /// The delivery controller's cache of unfinished deliveries, once the controllers started.
    pub fn unfinished_deliveries(&self) -> Option<&Store<WebhookDelivery>> {
        self.unfinished.get()
    }

    /// Installs the delivery controller's cache.
    pub fn set_unfinished_deliveries(&self, store: Store<WebhookDelivery>) {
        let _ = self.unfinished.set(store);
    }

    /// The receiver's recoveries from unready, when the operator wired them.
    pub fn ready_again(&self) -> Option<watch::Receiver<u64>> {
        self.ready_again.get().cloned()
    }

    /// Hands the controllers the receiver's recoveries from unready.
    pub fn set_ready_again(&self, recoveries: watch::Receiver<u64>) {
        let _ = self.ready_again.set(recoveries);
    }

    /// The Secrets this replica's receiver found missing or changed, when the operator wired them.
    pub fn secret_observations(&self) -> Option<broadcast::Receiver<SecretId>> {
        self.secret_observations
            .get()
            .map(broadcast::Sender::subscribe)
    }

    /// Hands the controllers the receiver's observations of changed Secrets.
    pub fn set_secret_observations(&self, observations: broadcast::Sender<SecretId>) {
        let _ = self.secret_observations.set(observations);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_installed_once_and_later_installs_are_ignored() {
        let stores = Stores::default();
        assert!(stores.routes().is_none() && stores.ready_again().is_none());
        let (first, _) = kube::runtime::reflector::store::<WebhookRoute>();
        let (second, _) = kube::runtime::reflector::store::<WebhookRoute>();
        stores.set_routes(first);
        stores.set_routes(second);
        assert!(stores.routes().is_some());
        let (tx, rx) = watch::channel(7);
        stores.set_ready_again(rx);
        let (_, other) = watch::channel(9);
        stores.set_ready_again(other);
        assert_eq!(stores.ready_again().map(|r| *r.borrow()), Some(7));
        drop(tx);
    }
}
