//! The documents the simulated ERP accepted: per-kind id sequences, bounded storage and the
//! acknowledgement it answers in its own (camelCase) dialect.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::lock::lock;

/// The four document kinds the ERP accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    Order,
    InventoryAdjustment,
    Shipment,
    Return,
}

impl DocumentKind {
    /// Every kind, in a fixed order.
    pub const ALL: [DocumentKind; 4] = [
        DocumentKind::Order,
        DocumentKind::InventoryAdjustment,
        DocumentKind::Shipment,
        DocumentKind::Return,
    ];

    /// The path segment under `/erp/v1/`.
    pub fn collection(self) -> &'static str {
        match self {
            DocumentKind::Order => "orders",
            DocumentKind::InventoryAdjustment => "inventory-adjustments",
            DocumentKind::Shipment => "shipments",
            DocumentKind::Return => "returns",
        }
    }

    /// The `documentType` of the acknowledgement.
    pub fn document_type(self) -> &'static str {
        match self {
            DocumentKind::Order => "order",
            DocumentKind::InventoryAdjustment => "inventory_adjustment",
            DocumentKind::Shipment => "shipment",
            DocumentKind::Return => "return",
        }
    }

    /// What every `documentId` of this kind starts with, before its 6 digits.
    pub fn id_prefix(self) -> &'static str {
        match self {
            DocumentKind::Order => "ERP-ORD-",
            DocumentKind::InventoryAdjustment => "ERP-INV-",
            DocumentKind::Shipment => "ERP-SHP-",
            DocumentKind::Return => "ERP-RET-",
        }
    }

    /// The kind served under `/erp/v1/{collection}`.
    pub fn from_collection(collection: &str) -> Option<DocumentKind> {
        DocumentKind::ALL
            .into_iter()
            .find(|kind| kind.collection() == collection)
    }

    fn index(self) -> usize {
        match self {
            DocumentKind::Order => 0,
            DocumentKind::InventoryAdjustment => 1,
            DocumentKind::Shipment => 2,
            DocumentKind::Return => 3,
        }
    }

    fn parse_sequence(self, document_id: &str) -> Option<u64> {
        let digits = document_id.strip_prefix(self.id_prefix())?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

/// One document the ERP accepted.
#[derive(Debug, Clone)]
pub struct StoredDocument {
    /// `ERP-ORD-000001` and so on.
    pub document_id: String,
    pub kind: DocumentKind,
    /// The number in the id: 1 for the first document of its kind since start or reset.
    pub sequence: u64,
    /// The body as parsed (always a JSON object).
    pub body: Value,
    /// The body exactly as received; `GET` answers these bytes.
    pub raw: Bytes,
    pub received_at: SystemTime,
    /// The body's `"id"` string field, if any.
    pub reference: Option<String>,
    /// The `X-Request-Id` header, if any.
    pub request_id: Option<String>,
}

impl StoredDocument {
    /// The acknowledgement the ERP answers with `201 Created`.
    pub fn ack_json(&self) -> Value {
        json!({
            "documentId": self.document_id,
            "documentType": self.kind.document_type(),
            "status": "ACCEPTED",
            "receivedAt": rfc3339(self.received_at),
            "reference": self.reference,
            "requestId": self.request_id,
        })
    }
}

pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[derive(Default)]
struct Shelf {
    last_sequence: u64,
    items: VecDeque<StoredDocument>,
}

/// Bounded per-kind storage; a lock per kind keeps order posts from contending with shipments.
pub(crate) struct DocumentStore {
    limit: usize,
    shelves: [Mutex<Shelf>; 4],
}

impl DocumentStore {
    pub(crate) fn new(limit: usize) -> DocumentStore {
        DocumentStore {
            limit,
            shelves: Default::default(),
        }
    }

    /// Stores a document and returns its acknowledgement. The ERP never deduplicates.
    pub(crate) fn store(
        &self,
        kind: DocumentKind,
        body: Value,
        raw: Bytes,
        request_id: Option<String>,
    ) -> Value {
        let reference = body.get("id").and_then(Value::as_str).map(str::to_owned);
        let received_at = SystemTime::now();
        let mut shelf = lock(&self.shelves[kind.index()]);
        shelf.last_sequence += 1;
        let sequence = shelf.last_sequence;
        let document = StoredDocument {
            document_id: format!("{}{sequence:06}", kind.id_prefix()),
            kind,
            sequence,
            body,
            raw,
            received_at,
            reference,
            request_id,
        };
        let ack = document.ack_json();
        if self.limit > 0 {
            shelf.items.push_back(document);
            while shelf.items.len() > self.limit {
                shelf.items.pop_front();
            }
        }
        ack
    }

    /// The raw body of a kept document.
    pub(crate) fn get(&self, kind: DocumentKind, document_id: &str) -> Option<Bytes> {
        let sequence = kind.parse_sequence(document_id)?;
        let shelf = lock(&self.shelves[kind.index()]);
        // Sequences in a shelf are consecutive, so the position follows from the first one.
        let first = shelf.items.front()?.sequence;
        let index = usize::try_from(sequence.checked_sub(first)?).ok()?;
        let document = shelf.items.get(index)?;
        (document.document_id == document_id).then(|| document.raw.clone())
    }

    pub(crate) fn list(&self, kind: DocumentKind) -> Vec<StoredDocument> {
        lock(&self.shelves[kind.index()])
            .items
            .iter()
            .cloned()
            .collect()
    }

    pub(crate) fn clear(&self) {
        for shelf in &self.shelves {
            *lock(shelf) = Shelf::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_order(store: &DocumentStore, id: &str) -> Value {
        let body = json!({ "id": id });
        let raw = Bytes::from(body.to_string());
        store.store(DocumentKind::Order, body, raw, None)
    }

    #[test]
    fn ids_are_per_kind_sequences() {
        let store = DocumentStore::new(10);
        assert_eq!(store_order(&store, "a")["documentId"], "ERP-ORD-000001");
        assert_eq!(store_order(&store, "a")["documentId"], "ERP-ORD-000002");
        let ack = store.store(
            DocumentKind::Return,
            json!({}),
            Bytes::from_static(b"{}"),
            Some("r-1".into()),
        );
        assert_eq!(ack["documentId"], "ERP-RET-000001");
        assert_eq!(ack["documentType"], "return");
        assert_eq!(ack["reference"], Value::Null);
        assert_eq!(ack["requestId"], "r-1");
    }

    #[test]
    fn limit_keeps_the_newest_and_ids_keep_counting() {
        let store = DocumentStore::new(2);
        for n in 0..5 {
            store_order(&store, &n.to_string());
        }
        let kept: Vec<_> = store
            .list(DocumentKind::Order)
            .into_iter()
            .map(|d| d.document_id)
            .collect();
        assert_eq!(kept, ["ERP-ORD-000004", "ERP-ORD-000005"]);
        assert!(store.get(DocumentKind::Order, "ERP-ORD-000003").is_none());
        assert!(store.get(DocumentKind::Order, "ERP-ORD-000004").is_some());
        assert!(store.get(DocumentKind::Order, "ERP-ORD-000006").is_none());
        assert!(
            store
                .get(DocumentKind::Shipment, "ERP-ORD-000004")
                .is_none()
        );
        // Same number, different spelling: not the stored id.
        assert!(store.get(DocumentKind::Order, "ERP-ORD-0000004").is_none());
    }

    #[test]
    fn clear_restarts_the_sequences() {
        let store = DocumentStore::new(10);
        store_order(&store, "a");
        store.clear();
        assert!(store.list(DocumentKind::Order).is_empty());
        assert_eq!(store_order(&store, "a")["documentId"], "ERP-ORD-000001");
    }
}
