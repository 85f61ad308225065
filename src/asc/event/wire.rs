//! The JSON shape of an event, borrowed from the body. Every string the operator keeps is a `Cow` that
//! points into the body unless JSON escapes forced a copy; attributes the operator does not read are
//! skipped without being decoded or allocated.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// The attribute names Apple uses for "the state after/before the change", per event family, in the
/// order they are preferred.
const NEW_STATE_KEYS: &[&str] = &["newState", "newValue", "newExternalBuildState"];
const OLD_STATE_KEYS: &[&str] = &["oldState", "oldValue", "oldExternalBuildState"];

#[derive(Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(borrow)]
    pub data: Option<Data<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Data<'a> {
    #[serde(borrow)]
    pub id: Option<Loose<'a>>,
    #[serde(rename = "type", borrow)]
    pub kind: Option<Loose<'a>>,
    #[serde(borrow)]
    pub version: Option<Loose<'a>>,
    #[serde(default, borrow)]
    pub attributes: Option<Attributes<'a>>,
    #[serde(default, borrow)]
    pub relationships: Option<Loose<'a>>,
}

/// Any JSON value, keeping only what the operator can use: strings, integers and objects. Lets a field
/// of an unexpected type mean "absent" instead of refusing the whole event.
#[derive(Debug)]
pub(super) enum Loose<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    /// An object's members in order; a repeated name counts with its last value, as in `serde_json::Map`.
    Obj(Vec<(Cow<'a, str>, Loose<'a>)>),
    Other,
}

impl<'a> Loose<'a> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Loose::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The member `name` of an object.
    pub fn get(&self, name: &str) -> Option<&Loose<'a>> {
        match self {
            Loose::Obj(members) => members
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Loose<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Owned(s)))
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<Self::Value, E> {
                Ok(Loose::Int(i))
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(u).map_or(Loose::Other, Loose::Int))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
                Ok(Loose::Bool(b))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(Key(k)) = map.next_key()? {
                    members.push((k, map.next_value()?));
                }
                Ok(Loose::Obj(members))
            }
        }
        d.deserialize_any(V)
    }
}

/// An object key, borrowed when it has no escapes (serde's own `Cow<str>` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Loose::deserialize(d)? {
            Loose::Str(s) => Ok(Key(s)),
            _ => Err(de::Error::custom("object key is not a string")),
        }
    }
}

/// What the operator reads of `data.attributes`: the states and the timestamp.
#[derive(Debug, Default)]
pub(super) struct Attributes<'a> {
    pub new_state: Option<Cow<'a, str>>,
    pub old_state: Option<Cow<'a, str>>,
    pub timestamp: Option<Cow<'a, str>>,
    /// `available` of alternative-distribution events.
    pub available: Option<bool>,
}

/// One side's (new or old) state attributes seen so far.
struct States<'a> {
    known_keys: &'static [&'static str],
    prefix: &'static str,
    /// The last value of each known name, by rank, if it is a non-empty string.
    known: [Option<Cow<'a, str>>; 3],
    /// Other names shaped like a state (`new…State`, `old…Value`), each with its last value.
    shaped: Vec<(Cow<'a, str>, Option<Cow<'a, str>>)>,
}

impl<'a> States<'a> {
    fn new(known_keys: &'static [&'static str], prefix: &'static str) -> Self {
        States {
            known_keys,
            prefix,
            known: [None, None, None],
            shaped: Vec::new(),
        }
    }

    fn wants(&self, key: &str) -> Option<Option<usize>> {
        if let Some(i) = self.known_keys.iter().position(|k| *k == key) {
            return Some(Some(i));
        }
        let shaped = key.strip_prefix(self.prefix).is_some_and(|rest| {
            rest.starts_with(|c: char| c.is_ascii_uppercase())
                && (key.ends_with("State") || key.ends_with("Value"))
        });
        shaped.then_some(None)
    }

    fn offer(&mut self, rank: Option<usize>, key: Cow<'a, str>, value: Loose<'a>) {
        let value = match value {
            Loose::Str(s) if !s.is_empty() => Some(s),
            _ => None,
        };
        match rank {
            Some(i) => self.known[i] = value,
            None => match self.shaped.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => *v = value,
                None => self.shaped.push((key, value)),
            },
        }
    }

    /// The known names first, in rank order; then the shaped name that sorts first.
    fn state(self) -> Option<Cow<'a, str>> {
        let States { known, shaped, .. } = self;
        known.into_iter().flatten().next().or_else(|| {
            shaped
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .min_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, v)| v)
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Attributes<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Attributes<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attributes object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut new = States::new(NEW_STATE_KEYS, "new");
                let mut old = States::new(OLD_STATE_KEYS, "old");
                let mut timestamp = None;
                let mut available = None;
                while let Some(Key(key)) = map.next_key()? {
                    if key == "available" {
                        available = match map.next_value()? {
                            Loose::Bool(b) => Some(b),
                            _ => None,
                        };
                    } else if key == "timestamp" {
                        timestamp = match map.next_value()? {
                            Loose::Str(s) => Some(s),
                            _ => None,
                        };
                    } else if let Some(rank) = new.wants(&key) {
                        new.offer(rank, key, map.next_value()?);
                    } else if let Some(rank) = old.wants(&key) {
                        old.offer(rank, key, map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Attributes {
                    new_state: new.state(),
                    old_state: old.state(),
                    timestamp,
                    available,
                })
            }
        }
        d.deserialize_map(V)
    }
}
