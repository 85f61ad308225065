//! The watch-fed stores of one leadership term.

use crate::resources::{AscCredential, WebhookDelivery, WebhookRoute};
use kube::runtime::reflector::Store;

/// The stores the term's watches feed, shared by its controllers. Built with the watches at the start of
/// each term, so a second term never reads what the first term's stopped watches last showed.
#[derive(Clone)]
pub struct Stores {
    /// The watched credentials.
    pub credentials: Store<AscCredential>,
    /// The watched routes (one store for the route, App Store Connect and delivery controllers).
    pub routes: Store<WebhookRoute>,
    /// The unfinished deliveries, slimmed to what scheduling reads.
    pub unfinished: Store<WebhookDelivery>,
}
