//! Which local tier: a leaf type that both the tiers and the copy loop name (a
//! staged fill's [`crate::copy::Source::Staged`] says which tier's `staging/` it is in).

/// Which local tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Memory,
    Disk,
}

impl Kind {
    /// Every local tier, fastest first: the order reads look in and objects sink through.
    pub(crate) const ALL: [Kind; 2] = [Kind::Memory, Kind::Disk];

    /// Its place in [`Kind::ALL`] (0 is the fastest): the index of its tier and policy.
    pub(crate) const fn rank(self) -> usize {
        match self {
            Kind::Memory => 0,
            Kind::Disk => 1,
        }
    }
}
