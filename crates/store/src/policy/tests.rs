//! Unit tests of `policy`.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

const NO_LIMIT: u64 = u64::MAX;

fn fp(key: u64) -> u64 {
    mix64(key ^ 0x5eed)
}

/// Evicts as needed, then inserts; returns the victims.
fn admit<P: EvictionPolicy>(p: &mut P, id: u64, fingerprint: u64, size: u64) -> Vec<u64> {
    let mut victims = Vec::new();
    while p.needs_eviction(size) {
        match p.evict() {
            Some(v) => victims.push(v),
            None => break,
        }
    }
    p.insert(id, fingerprint, size);
    victims
}

/// One access of `key` (id = key): touch on a hit, admit on a miss.
/// Returns whether it hit.
fn access<P: EvictionPolicy>(p: &mut P, key: u64) -> bool {
    if p.touch(key) {
        true
    } else {
        admit(p, key, fp(key), 1);
        false
    }
}

fn both(bytes: u64, objects: u64) -> (S3Fifo, Lru) {
    (S3Fifo::new(bytes, objects), Lru::new(bytes, objects))
}

fn check_byte_capacity<P: EvictionPolicy>(p: &mut P) {
    for id in 0..500 {
        admit(p, id, fp(id), 10 + id % 7 * 13);
        assert!(p.used_bytes() <= 1000, "{} bytes", p.used_bytes());
        assert!(p.contains(id));
    }
    assert!(p.used_bytes() > 900);
}

#[test]
fn byte_capacity_is_honoured() {
    let (mut s, mut l) = both(1000, NO_LIMIT);
    check_byte_capacity(&mut s);
    check_byte_capacity(&mut l);
    s.t.check();
    l.t.check();
}

fn check_object_capacity<P: EvictionPolicy>(p: &mut P) {
    for id in 0..500 {
        admit(p, id, fp(id), 1 << 20);
        assert!(p.len() <= 50);
        if id % 3 == 0 {
            p.touch(id);
        }
    }
    assert_eq!(p.len(), 50);
    assert_eq!(p.used_bytes(), 50 << 20);
}

#[test]
fn object_capacity_is_honoured() {
    let (mut s, mut l) = both(NO_LIMIT, 50);
    check_object_capacity(&mut s);
    check_object_capacity(&mut l);
}

fn check_pinning<P: EvictionPolicy>(p: &mut P) {
    for id in 0..10 {
        p.insert(id, fp(id), 1);
    }
    for id in (0..10).step_by(2) {
        assert!(p.set_pinned(id, true));
    }
    assert!(!p.set_pinned(99, true));
    assert!(!p.is_pinned(99));
    let mut victims: Vec<u64> = std::iter::from_fn(|| p.evict()).collect();
    victims.sort_unstable();
    assert_eq!(victims, [1, 3, 5, 7, 9]);
    assert_eq!(p.len(), 5);
    // Everything left is pinned: None, again and again, not a hang.
    assert_eq!(p.evict(), None);
    assert_eq!(p.evict(), None);
    assert!(p.needs_eviction(0));
    assert!(p.is_pinned(4));
    assert!(p.set_pinned(4, false));
    assert!(!p.is_pinned(4));
    assert_eq!(p.evict(), Some(4));
    assert_eq!(p.evict(), None);
    assert_eq!(p.len(), 4);
}

#[test]
fn pinned_objects_are_never_evicted() {
    let (mut s, mut l) = both(NO_LIMIT, 5);
    check_pinning(&mut s);
    check_pinning(&mut l);
    s.t.check();
    l.t.check();
}

#[test]
fn all_pinned_returns_none() {
    let mut s = S3Fifo::new(NO_LIMIT, 1000);
    for id in 0..1000 {
        s.insert(id, fp(id), 1);
        s.touch(id);
        s.set_pinned(id, true);
    }
    assert_eq!(s.evict(), None);
    let mut l = Lru::new(NO_LIMIT, 1000);
    for id in 0..1000 {
        l.insert(id, fp(id), 1);
        l.set_pinned(id, true);
    }
    assert_eq!(l.evict(), None);
}

fn check_reuse<P: EvictionPolicy>(p: &mut P) {
    p.insert(7, fp(1), 100);
    p.touch(7);
    p.set_pinned(7, true);
    assert!(p.remove(7));
    assert!(!p.remove(7));
    assert!(!p.contains(7) && !p.touch(7) && !p.is_pinned(7));
    assert_eq!((p.len(), p.used_bytes()), (0, 0));
    // The id now names a different object.
    p.insert(7, fp(2), 30);
    assert_eq!(p.frequency(7), Some(0));
    assert!(!p.is_pinned(7));
    assert_eq!((p.len(), p.used_bytes()), (1, 30));
    assert_eq!(p.evict(), Some(7));
    assert_eq!(p.evict(), None);
    // Removal does not count as an eviction.
    assert!(!p.was_recently_evicted(fp(1)));
}

#[test]
fn remove_then_reinsert_reused_id() {
    let (mut s, mut l) = both(NO_LIMIT, 10);
    check_reuse(&mut s);
    check_reuse(&mut l);
}

#[test]
fn ghost_hit_goes_to_main() {
    let mut s = S3Fifo::new(NO_LIMIT, 10);
    for id in 0..10 {
        s.insert(id, fp(id), 1);
    }
    // Object 0 is the oldest in S and unused: it goes to the ghost.
    assert_eq!(s.evict(), Some(0));
    assert!(s.was_recently_evicted(fp(0)));
    assert!(!s.was_recently_evicted(fp(1)));
    // It comes back under a new id: straight to M, out of the ghost.
    s.insert(100, fp(0), 1);
    assert!(!s.was_recently_evicted(fp(0)));
    let slot = s.t.find(100).unwrap();
    assert_eq!(Table::list_of(s.t.meta(slot)), Q_MAIN);
    // So it outlives the objects still in S.
    for id in 1..10 {
        assert_eq!(s.evict(), Some(id));
    }
    assert_eq!(s.evict(), Some(100));
    s.t.check();
}

#[test]
fn main_evictions_reach_the_ghost_only_if_configured() {
    for ghost_main_evictions in [false, true] {
        let config = S3FifoConfig {
            ghost_main_evictions,
            ..S3FifoConfig::default()
        };
        let mut s = S3Fifo::with_config(NO_LIMIT, 10, config);
        s.insert(1, fp(1), 1);
        s.touch(1);
        s.insert(2, fp(2), 1);
        assert_eq!(s.evict(), Some(2)); // from S, 1 moves to M
        assert!(s.was_recently_evicted(fp(2)));
        assert_eq!(s.evict(), Some(1)); // from M
        assert_eq!(s.was_recently_evicted(fp(1)), ghost_main_evictions);
    }
}

#[test]
fn frequency_saturates_and_promotes() {
    let mut s = S3Fifo::new(NO_LIMIT, 10);
    s.insert(1, fp(1), 1);
    s.insert(2, fp(2), 1);
    for n in 1..=5u8 {
        s.touch(1);
        assert_eq!(s.frequency(1), Some(n.min(3)));
    }
    assert_eq!(s.frequency(9), None);
    // Evicting from S promotes 1 (its counter restarts in M) and
    // evicts 2.
    assert_eq!(s.evict(), Some(2));
    assert_eq!(s.frequency(1), Some(0));
    assert_eq!(s.evict(), Some(1));
}

/// 200 hot keys, each accessed a few times, then a scan of 5000 keys
/// accessed once; count how many hot keys are still resident.
fn hot_survivors<P: EvictionPolicy>(p: &mut P) -> usize {
    for _ in 0..4 {
        for k in 0..200 {
            access(p, k);
        }
    }
    for k in 10_000..15_000 {
        access(p, k);
    }
    (0..200).filter(|&k| p.contains(k)).count()
}

#[test]
fn scan_does_not_flush_s3fifo_but_flushes_lru() {
    let (mut s, mut l) = both(NO_LIMIT, 400);
    let s_kept = hot_survivors(&mut s);
    let l_kept = hot_survivors(&mut l);
    assert_eq!(s_kept, 200, "S3-FIFO lost hot objects to a scan");
    assert_eq!(l_kept, 0, "LRU is expected to be flushed by a scan");
    s.t.check();
}

fn check_shrink<P: EvictionPolicy>(p: &mut P) {
    for id in 0..100 {
        admit(p, id, fp(id), 10);
    }
    assert_eq!((p.len(), p.used_bytes()), (100, 1000));
    p.set_pinned(3, true);
    p.set_capacity(500, 80);
    assert_eq!(p.capacity(), (500, 80));
    assert!(p.over_capacity());
    let mut evicted = 0;
    while p.over_capacity() {
        assert!(p.evict().is_some());
        evicted += 1;
    }
    assert_eq!(evicted, 50);
    assert_eq!((p.len(), p.used_bytes()), (50, 500));
    assert!(p.contains(3));
    p.set_capacity(500, 10);
    while p.over_capacity() {
        assert_ne!(p.evict(), Some(3));
    }
    assert_eq!(p.len(), 10);
    p.set_capacity(0, 0);
    while p.evict().is_some() {}
    assert_eq!((p.len(), p.used_bytes()), (1, 10));
    assert!(p.needs_eviction(0));
}

#[test]
fn set_capacity_shrink_then_evict_down() {
    let (mut s, mut l) = both(NO_LIMIT, NO_LIMIT);
    check_shrink(&mut s);
    check_shrink(&mut l);
    s.t.check();
    l.t.check();
}

#[test]
fn huge_sizes_are_exact() {
    let (mut s, mut l) = both(NO_LIMIT, NO_LIMIT);
    let sizes = [u64::from(SIZE_BIG) - 1, u64::from(SIZE_BIG), 5 << 40, 1];
    for p in [&mut s as &mut dyn EvictionPolicy, &mut l] {
        for (id, &size) in sizes.iter().enumerate() {
            p.insert(id as u64, fp(id as u64), size);
        }
        assert_eq!(p.used_bytes(), sizes.iter().sum::<u64>());
        p.remove(2);
        assert_eq!(p.used_bytes(), sizes.iter().sum::<u64>() - (5 << 40));
        while p.evict().is_some() {}
        assert_eq!((p.len(), p.used_bytes()), (0, 0));
    }
    assert!(s.t.big.is_empty() && l.t.big.is_empty());
}

#[test]
fn memory_per_object() {
    let n = 200_000u64;
    let (mut s, mut l) = both(NO_LIMIT, n);
    for id in 0..2 * n {
        admit(&mut s, id * 7919, fp(id), 1000);
        admit(&mut l, id * 7919, fp(id), 1000);
    }
    // 200,000 slots also widened the index's slot field once.
    assert_eq!(s.t.index.slot_bits, 18);
    s.t.check();
    l.t.check();
    for (name, bytes) in [("s3fifo", s.heap_bytes()), ("lru", l.heap_bytes())] {
        let per = bytes as f64 / n as f64;
        assert!(per <= 40.0, "{name}: {per:.1} bytes per object");
    }
}

/// Random operations against a model, checking the invariants after
/// every step.
fn model_test<P: EvictionPolicy>(p: &mut P, t: impl Fn(&P) -> &Table, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    // id → (size, pinned)
    let mut model: HashMap<u64, (u64, bool)> = HashMap::new();
    let mut returned: HashSet<u64> = HashSet::new();
    for step in 0..20_000 {
        let id = rng.gen_range(0..300u64);
        match rng.gen_range(0..100) {
            0..=39 => {
                if !model.contains_key(&id) {
                    let size = match rng.gen_range(0..50) {
                        0 => 1 << 29,
                        _ => rng.gen_range(0..2000),
                    };
                    for v in admit(p, id, rng.gen(), size) {
                        let (_, pinned) = model.remove(&v).expect("victim not resident");
                        assert!(!pinned, "pinned victim");
                        assert!(returned.insert(v), "victim returned twice");
                    }
                    model.insert(id, (size, false));
                    returned.remove(&id);
                }
            }
            40..=64 => assert_eq!(p.touch(id), model.contains_key(&id)),
            65..=74 => assert_eq!(p.remove(id), model.remove(&id).is_some()),
            75..=84 => {
                let pin = rng.gen_bool(0.5);
                let expect = model.get_mut(&id).map(|e| e.1 = pin).is_some();
                assert_eq!(p.set_pinned(id, pin), expect);
            }
            85..=94 => match p.evict() {
                Some(v) => {
                    let (_, pinned) = model.remove(&v).expect("victim not resident");
                    assert!(!pinned, "pinned victim");
                    assert!(returned.insert(v), "victim returned twice");
                }
                None => assert!(model.values().all(|e| e.1), "None with unpinned objects"),
            },
            95..=97 => {
                let objects = rng.gen_range(1..200);
                let bytes = rng.gen_range(1000..200_000);
                p.set_capacity(bytes, objects);
                while p.over_capacity() {
                    match p.evict() {
                        Some(v) => {
                            let (_, pinned) = model.remove(&v).expect("not resident");
                            assert!(!pinned);
                            assert!(returned.insert(v));
                        }
                        None => break,
                    }
                }
            }
            _ => {
                assert_eq!(p.frequency(id).is_some(), model.contains_key(&id));
                assert_eq!(p.is_pinned(id), model.get(&id).is_some_and(|e| e.1));
            }
        }
        assert_eq!(p.len(), model.len());
        assert_eq!(p.is_empty(), model.is_empty());
        assert_eq!(p.used_bytes(), model.values().map(|e| e.0).sum::<u64>());
        assert_eq!(p.contains(id), model.contains_key(&id));
        if step % 97 == 0 {
            t(p).check();
            for (&id, &(_, pinned)) in &model {
                assert!(p.contains(id));
                assert_eq!(p.is_pinned(id), pinned);
            }
        }
    }
}

#[test]
fn randomized_against_model() {
    for seed in 0..4 {
        model_test(&mut S3Fifo::new(100_000, 100), |p| &p.t, seed);
        model_test(&mut Lru::new(100_000, 100), |p| &p.t, seed);
        let config = S3FifoConfig {
            small_ratio: 0.3,
            promote_threshold: 2,
            ghost_ratio: 2.0,
            ghost_main_evictions: true,
        };
        model_test(&mut S3Fifo::with_config(50_000, 60, config), |p| &p.t, seed);
    }
}

#[test]
fn index_survives_heavy_churn() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut s = S3Fifo::new(NO_LIMIT, NO_LIMIT);
    let mut live = HashSet::new();
    for _ in 0..50_000 {
        let id = rng.gen_range(0..3000u64) << 32 | rng.gen_range(0..4);
        if live.remove(&id) {
            assert!(s.remove(id));
        } else {
            s.insert(id, id, 1);
            live.insert(id);
        }
    }
    s.t.check();
    for id in &live {
        assert!(s.contains(*id));
    }
    assert_eq!(s.len(), live.len());
}
