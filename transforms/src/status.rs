//! The canonical fulfilment status of orders and order lines, and the roll-up of line
//! statuses into one order status (Walmart reports status per line only).

use std::fmt;
use std::str::FromStr;

/// Canonical status of an order or of one order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Placed but not yet released for fulfilment (e.g. payment pending).
    Pending,
    /// Released for fulfilment, nothing shipped yet.
    Unfulfilled,
    /// Some units shipped, some still to ship.
    PartiallyFulfilled,
    /// Every unit shipped.
    Fulfilled,
    /// Every unit delivered.
    Delivered,
    /// Cancelled before shipping.
    Cancelled,
    /// Money returned for every unit.
    Refunded,
    /// The channel says it cannot be fulfilled.
    Unfulfillable,
}

impl Status {
    /// Every status, in schema order.
    pub const ALL: [Status; 8] = [
        Status::Pending,
        Status::Unfulfilled,
        Status::PartiallyFulfilled,
        Status::Fulfilled,
        Status::Delivered,
        Status::Cancelled,
        Status::Refunded,
        Status::Unfulfillable,
    ];

    /// The canonical (schema) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Unfulfilled => "unfulfilled",
            Status::PartiallyFulfilled => "partially_fulfilled",
            Status::Fulfilled => "fulfilled",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
            Status::Refunded => "refunded",
            Status::Unfulfillable => "unfulfillable",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a canonical status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a canonical status (one of pending, unfulfilled, partially_fulfilled, fulfilled, delivered, cancelled, refunded, unfulfillable)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Status, UnknownStatus> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// One status for a set of line statuses.
///
/// Cancelled lines do not hold an order open, and refunded lines are settled: the order
/// is cancelled only when every line is, refunded when every line still standing is, and
/// otherwise follows the lines still to fulfil: delivered when all are, fulfilled when all
/// shipped, partially fulfilled when some shipped, pending when all wait, unfulfillable when
/// all are, else unfulfilled. `None` for no lines at all.
pub fn roll_up(lines: &[Status]) -> Option<Status> {
    use Status::*;
    if lines.is_empty() {
        return None;
    }
    let standing: Vec<Status> = lines.iter().copied().filter(|s| *s != Cancelled).collect();
    if standing.is_empty() {
        return Some(Cancelled);
    }
    let open: Vec<Status> = standing
        .iter()
        .copied()
        .filter(|s| *s != Refunded)
        .collect();
    if open.is_empty() {
        return Some(Refunded);
    }
    let all = |pred: fn(Status) -> bool| open.iter().all(|s| pred(*s));
    let any = |pred: fn(Status) -> bool| open.iter().any(|s| pred(*s));
    Some(if all(|s| s == Delivered) {
        Delivered
    } else if all(|s| matches!(s, Fulfilled | Delivered)) {
        Fulfilled
    } else if any(|s| matches!(s, Fulfilled | Delivered | PartiallyFulfilled)) {
        PartiallyFulfilled
    } else if all(|s| s == Pending) {
        Pending
    } else if all(|s| s == Unfulfillable) {
        Unfulfillable
    } else {
        Unfulfilled
    })
}

#[cfg(test)]
mod tests {
    use super::Status::*;
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
        }
        assert!("Shipped".parse::<Status>().is_err());
    }

    #[test]
    fn lines_roll_up_to_one_status() {
        assert_eq!(roll_up(&[]), None);
        assert_eq!(roll_up(&[Unfulfilled, Fulfilled]), Some(PartiallyFulfilled));
        assert_eq!(roll_up(&[Fulfilled, Delivered]), Some(Fulfilled));
        assert_eq!(roll_up(&[Delivered, Delivered]), Some(Delivered));
        assert_eq!(roll_up(&[Cancelled, Cancelled]), Some(Cancelled));
        assert_eq!(roll_up(&[Cancelled, Fulfilled]), Some(Fulfilled));
        assert_eq!(roll_up(&[Cancelled, Unfulfilled]), Some(Unfulfilled));
        assert_eq!(roll_up(&[Refunded, Cancelled]), Some(Refunded));
        assert_eq!(roll_up(&[Refunded, Delivered]), Some(Delivered));
        assert_eq!(roll_up(&[Pending, Pending]), Some(Pending));
        assert_eq!(roll_up(&[Pending, Unfulfilled]), Some(Unfulfilled));
        assert_eq!(roll_up(&[Unfulfillable]), Some(Unfulfillable));
        assert_eq!(roll_up(&[Unfulfillable, Unfulfilled]), Some(Unfulfilled));
        assert_eq!(
            roll_up(&[PartiallyFulfilled, Unfulfilled]),
            Some(PartiallyFulfilled)
        );
    }
}
