//! Tokens opened recently on this thread.
//!
//! Every request of a session carries the same token, and opening it (base64,
//! then AES-GCM-SIV, which derives a key per message) was about 3% of
//! Tether's CPU per sticky request. A session's next request on the same
//! thread finds the opened token here instead.
//!
//! Why this is as safe as opening: an entry is made only from a token that
//! opened, a hit needs the very same bytes and the very same set of keys (each
//! `Keys` has an identity, so two Tethers in one process, or a reload,
//! never share entries), and a token has no expiry, so what it opened to once
//! it opens to forever. A forged token never hits and is opened (and fails)
//! as before. The table is direct-mapped and small: a miss costs one
//! comparison, an attacker who floods it with valid tokens of their own only
//! makes others miss.

use std::cell::RefCell;

use super::token::Sealed;

/// Slots per thread (a power of two).
const SLOTS: usize = 256;

struct Entry {
    keys: u64,
    token: Box<[u8]>,
    sealed: Sealed,
}

thread_local! {
    static OPENED: RefCell<Vec<Option<Entry>>> = RefCell::new((0..SLOTS).map(|_| None).collect());
}

/// A token's slot. Tokens end in their authentication tag, uniformly random
/// bytes (as base64), so their last eight bytes spread well.
fn slot(token: &[u8]) -> usize {
    let mut tail = [0u8; 8];
    let n = token.len().min(8);
    tail[..n].copy_from_slice(&token[token.len() - n..]);
    let h = u64::from_le_bytes(tail).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 56) as usize % SLOTS
}

/// What `token` opened to under `keys`, if it is here.
pub fn get(keys: u64, token: &[u8]) -> Option<Sealed> {
    OPENED
        .try_with(|table| {
            let table = table.borrow();
            match &table[slot(token)] {
                Some(e) if e.keys == keys && *e.token == *token => Some(e.sealed.clone()),
                _ => None,
            }
        })
        .ok()
        .flatten()
}

/// Remembers that `token` opened to `sealed` under `keys`.
pub fn put(keys: u64, token: &[u8], sealed: &Sealed) {
    let _ = OPENED.try_with(|table| {
        table.borrow_mut()[slot(token)] = Some(Entry {
            keys,
            token: token.into(),
            sealed: sealed.clone(),
        });
    });
}
