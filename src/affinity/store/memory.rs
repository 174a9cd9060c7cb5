//! `store = "memory"`: the session table in this process, for one Tether
//! instance whose ids must stay untouched. Sharded; expired entries are
//! dropped as the table grows (each shard sweeps when it doubles).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{SessionStore, Space, StoreFuture};

const SHARDS: usize = 16;

struct Entry {
    value: String,
    expires: Instant,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<(Space, Box<[u8]>), Entry>,
    swept_at: usize,
}

pub struct Memory {
    shards: [Mutex<Shard>; SHARDS],
    hasher: std::hash::RandomState,
}

impl Memory {
    pub fn new() -> Memory {
        Memory {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn shard(&self, space: Space, id: &[u8]) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::BuildHasher;
        let i = self.hasher.hash_one((space, id)) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

impl SessionStore for Memory {
    fn get<'a>(
        &'a self,
        space: Space,
        id: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, Option<String>> {
        let now = Instant::now();
        let mut shard = self.shard(space, id);
        let key = (space, Box::<[u8]>::from(id));
        let found = match shard.entries.get_mut(&key) {
            Some(e) if e.expires > now => {
                e.expires = now + ttl;
                Some(e.value.clone())
            }
            Some(_) => {
                shard.entries.remove(&key);
                None
            }
            None => None,
        };
        Box::pin(std::future::ready(Ok(found)))
    }

    fn put<'a>(
        &'a self,
        space: Space,
        id: &'a [u8],
        value: String,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        let now = Instant::now();
        let mut shard = self.shard(space, id);
        if shard.entries.len() >= (2 * shard.swept_at).max(64) {
            shard.entries.retain(|_, e| e.expires > now);
            shard.swept_at = shard.entries.len();
        }
        let entry = Entry {
            value,
            expires: now + ttl,
        };
        shard.entries.insert((space, id.into()), entry);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove<'a>(&'a self, space: Space, id: &'a [u8]) -> StoreFuture<'a, ()> {
        self.shard(space, id)
            .entries
            .remove(&(space, Box::<[u8]>::from(id)));
        Box::pin(std::future::ready(Ok(())))
    }
}
