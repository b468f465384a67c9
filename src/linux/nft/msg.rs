//! The unit a batch is made of and the socket sends: kept apart from both so that neither
//! imports the other's internals.

use super::Family;

/// One message of a batch, with a human description used in error messages.
#[derive(Clone, Debug)]
pub(crate) struct BatchMsg {
    pub msg_type: u16,
    pub family: Family,
    pub flags: u16,
    pub attrs: Vec<u8>,
    pub what: String,
}
