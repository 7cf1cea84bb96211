//! The channels a policy set knows, densely indexed so per-channel settings and metric handles
//! are plain vectors. A leaf of the model: policy kinds keep it without depending on the rest.

use std::sync::Arc;

use crate::pipeline::Channel;

/// The channels the gateway knows, densely indexed.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    names: Vec<Arc<str>>,
}

impl Channels {
    /// The channels of these names; a channel's index is its position.
    pub fn new(names: Vec<Arc<str>>) -> Self {
        Channels { names }
    }

    /// The channel of this name.
    pub fn get(&self, name: &str) -> Option<Channel> {
        self.names
            .iter()
            .position(|n| &**n == name)
            .map(|index| Channel {
                index,
                name: self.names[index].clone(),
            })
    }

    /// All names, by index.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }
}
