//! `status.seenEvents` of a route, held compactly.
//!
//! The leader caches every route, and a route that has pruned a thousand deliveries carries a thousand
//! keys. As `Vec<String>` each key costs a 24-byte `String` plus a 32-byte heap block, about 56 KiB per
//! full route (56 MiB for 1,000 such routes); as fixed 16-byte keys in one buffer, 16 KiB. On the wire it
//! stays a list of strings.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of an event key: the 16 hex digits that end a delivery's name.
pub const KEY_LEN: usize = crate::naming::EVENT_KEY_LEN;

/// Keys a route keeps (the schema's `maxItems`); pruning forgets the oldest first.
pub const LIMIT: usize = 1000;

/// One event key, as its 16 ASCII hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey([u8; KEY_LEN]);

impl EventKey {
    /// The key `s`, if it has the shape of one (16 lowercase hex digits).
    pub fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; KEY_LEN] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(EventKey(bytes))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits get in (`parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for EventKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Event keys, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeenEvents(Vec<EventKey>);

impl SeenEvents {
    /// Keys from oldest to newest.
    pub fn new(keys: Vec<EventKey>) -> Self {
        SeenEvents(keys)
    }

    /// Whether no key is held (the field is then left out).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: &EventKey) -> bool {
        self.0.contains(key)
    }

    /// The keys, oldest first.
    pub fn keys(&self) -> &[EventKey] {
        &self.0
    }
}

impl Serialize for SeenEvents {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(EventKey::as_str))
    }
}

impl<'de> Deserialize<'de> for SeenEvents {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries: Vec<Entry> = Vec::deserialize(d)?;
        // An entry that is not a key can match no delivery: skipping it loses nothing, and a route whose
        // status was edited by hand still loads (the schema refuses such entries from now on).
        let mut keys: Vec<EventKey> = entries.into_iter().filter_map(|e| e.0).collect();
        keys.shrink_to_fit();
        Ok(SeenEvents(keys))
    }
}

/// One list entry, read from the input's text without a `String` of its own.
struct Entry(Option<EventKey>);

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Entry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event key (16 hex digits)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Entry, E> {
                Ok(Entry(EventKey::parse(s)))
            }
        }
        d.deserialize_str(Text)
    }
}

impl JsonSchema for SeenEvents {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SeenEvents".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "array",
            "maxItems": LIMIT,
            "items": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_as_a_list_of_strings_and_entries_that_are_no_key_are_dropped() {
        let json = r#"["0123456789abcdef","not-a-key","fedcba9876543210","0123456789ABCDEF"]"#;
        let seen: SeenEvents = serde_json::from_str(json).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            serde_json::to_string(&seen).unwrap(),
            r#"["0123456789abcdef","fedcba9876543210"]"#
        );
        assert!(seen.contains(&EventKey::parse("fedcba9876543210").unwrap()));
        assert!(EventKey::parse("0123456789abcde").is_none());
    }

    #[test]
    fn a_full_record_takes_sixteen_bytes_a_key() {
        let json = serde_json::to_string(
            &(0..1000u64)
                .map(|n| format!("{n:016x}"))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let seen: SeenEvents = serde_json::from_str(&json).unwrap();
        assert_eq!(seen.len(), 1000);
        assert_eq!(std::mem::size_of_val(seen.keys()), 16_000);
    }
}
