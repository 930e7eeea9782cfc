//! A bound on how deeply a decoded value may nest.
//!
//! bincode 1.3 has no recursion limit, and a few wire types contain
//! themselves (a linearized read wraps a request, a batch holds commands and
//! its reply holds replies). Each level costs the decoder some stack, so a
//! frame of a couple of kilobytes nesting a type in itself a couple of
//! thousand times would overflow the stack of the daemon's worker thread
//! and abort the process before any check of the decoded value could run.
//! The recursive fields decode through [`bounded`], which counts the levels
//! entered on this thread and refuses the value past [`MAX_NESTING`], while
//! decoding.

use std::cell::Cell;

use serde::de::{Deserialize, Deserializer, Error};

/// Levels of a recursive type one decode may enter. Nothing ipkeep sends
/// nests more than twice (a batch of commands; a linearized read).
pub const MAX_NESTING: u32 = 4;

/// The stack of the threads that decode frames from outside in the daemon
/// (its runtime's workers); the fuzz targets decode on threads of this size
/// too, so that they fail where the daemon would.
pub const DECODE_STACK_BYTES: usize = 2 << 20;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// One level entered; left when dropped, also when decoding fails or
/// unwinds.
struct Level;

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

fn enter<E: Error>() -> Result<Level, E> {
    DEPTH.with(|d| {
        let depth = d.get();
        if depth >= MAX_NESTING {
            return Err(E::custom(format_args!(
                "the message nests more than {MAX_NESTING} levels deep"
            )));
        }
        d.set(depth + 1);
        Ok(Level)
    })
}

/// `#[serde(deserialize_with = "crate::nesting::bounded")]` for a field
/// through which a type contains itself.
pub fn bounded<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let _level = enter::<D::Error>()?;
    T::deserialize(deserializer)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::codec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Tree {
        Leaf(u8),
        Node(#[serde(deserialize_with = "bounded")] Vec<Tree>),
    }

    fn nested(depth: usize) -> Tree {
        (0..depth).fold(Tree::Leaf(1), |inner, _| Tree::Node(vec![inner]))
    }

    #[test]
    fn values_up_to_the_bound_decode_and_deeper_ones_are_refused() {
        let ok = nested(MAX_NESTING as usize);
        let bytes = codec::encode(&ok).unwrap();
        assert_eq!(codec::decode::<Tree>(&bytes, 1 << 20).unwrap(), ok);
        let deep = codec::encode(&nested(MAX_NESTING as usize + 1)).unwrap();
        let err = codec::decode::<Tree>(&deep, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("nests more than"), "{err}");
        // The count is back at zero after a refusal: the next value decodes.
        assert_eq!(codec::decode::<Tree>(&bytes, 1 << 20).unwrap(), ok);
    }

    /// A frame of 2 KB of Linearize wrappers, deep enough to overflow an
    /// unchecked decoder, decoded on a thread with the daemon's decoder
    /// stack.
    #[test]
    fn a_request_nested_thousands_deep_is_refused_on_the_daemons_stack() {
        use crate::message::Request;
        let leaf = codec::encode(&Request::NodeStatus).unwrap();
        let one = codec::encode(&Request::Linearize(Box::new(Request::NodeStatus))).unwrap();
        let wrapper = &one[..one.len() - leaf.len()];
        let mut bytes = wrapper.repeat(1_850);
        bytes.extend_from_slice(&leaf);
        let decoded = std::thread::Builder::new()
            .stack_size(DECODE_STACK_BYTES)
            .spawn(move || codec::decode::<Request>(&bytes, 1 << 20).map_err(|e| e.to_string()))
            .unwrap()
            .join()
            .expect("the decoder thread survives");
        assert!(decoded.unwrap_err().contains("nests more than"));
    }
}
