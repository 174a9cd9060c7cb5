//! The session keys in force: the first seals, every one opens.
//!
//! A `t2.` token names its key by id, so opening costs one decryption
//! whatever the number of keys; a `t1.` token (sealed before key ids) is
//! tried under each key in turn. Opens are counted per key, so an operator
//! rolling a new key out sees when the old one is no longer used.

use prometheus_client::metrics::counter::Counter;

use super::cache;
use super::token::{Decoded, PrincipalTag, Sealed, Sealer, SessionKey, TokenError};

/// Most keys in force at once (a rollout needs two; a few more are allowed).
pub const MAX_KEYS: usize = 16;

pub struct Keys {
    /// The first seals.
    sealers: Vec<Sealer>,
    /// `tether_token_opens_total{key}`, one per sealer.
    opens: Vec<Counter>,
    /// Unique in this process: what the opened-token cache is keyed by, so
    /// a new set of keys (a reload) never finds what another set opened.
    id: u64,
}

impl Keys {
    /// The config gives 1 to [`MAX_KEYS`] keys; given none, a random one
    /// is made, and keys past [`MAX_KEYS`] are ignored.
    pub fn new(keys: &[SessionKey], opens: impl Fn(&SessionKey) -> Counter) -> Keys {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let keys = match keys.is_empty() {
            true => vec![SessionKey::generate()],
            false => keys[..keys.len().min(MAX_KEYS)].to_vec(),
        };
        Keys {
            sealers: keys.iter().map(Sealer::new).collect(),
            opens: keys.iter().map(opens).collect(),
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The sealing key's sealer.
    pub fn sealer(&self) -> &Sealer {
        &self.sealers[0]
    }

    /// Opens `token`, from this thread's recently opened tokens if it is
    /// there (`cache` says why that is as safe as opening it again).
    pub fn open(&self, token: &[u8]) -> Result<Sealed, TokenError> {
        let sealed = match cache::get(self.id, token) {
            Some(sealed) => sealed,
            None => {
                let sealed = self.open_fresh(token)?;
                cache::put(self.id, token, &sealed);
                sealed
            }
        };
        if let Some(opens) = self.opens.get(usize::from(sealed.key)) {
            opens.inc();
        }
        Ok(sealed)
    }

    fn open_fresh(&self, token: &[u8]) -> Result<Sealed, TokenError> {
        let text = std::str::from_utf8(token).map_err(|_| TokenError::Format)?;
        let mut decoded = Decoded::new(text)?;
        let (index, sealer) = match decoded.key_id() {
            Some(id) => self
                .sealers
                .iter()
                .enumerate()
                .find(|(_, s)| s.key_id() == id)
                .ok_or(TokenError::UnknownKey)?,
            // The first format: each key in turn (decryption is in place,
            // so each try works on a copy of the one decoding).
            None => {
                for (i, sealer) in self.sealers.iter().enumerate() {
                    let mut fresh = decoded.clone();
                    match sealer.open_decoded(&mut fresh) {
                        Ok(sealed) => return Ok(Self::by(sealed, i)),
                        Err(TokenError::Forged) => continue,
                        Err(e) => return Err(e),
                    }
                }
                return Err(TokenError::Forged);
            }
        };
        sealer
            .open_decoded(&mut decoded)
            .map(|sealed| Self::by(sealed, index))
    }

    fn by(mut sealed: Sealed, index: usize) -> Sealed {
        sealed.key = index as u8; // index < MAX_KEYS
        sealed
    }

    /// The tag of `principal` under the key that opened `sealed`.
    pub fn tag_for(&self, sealed: &Sealed, principal: &[u8]) -> PrincipalTag {
        let sealer = self
            .sealers
            .get(usize::from(sealed.key))
            .unwrap_or(self.sealer());
        sealer.principal_tag(principal)
    }
}
