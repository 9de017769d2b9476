//! Sticky poisoning on failed syncs.
//!
//! After a failed fsync the kernel may have dropped dirty pages and cleared
//! the error, so a retry can "succeed" without the data being on disk. The
//! only safe reaction is to stop writing: every later write fails with
//! [`StoreError::Poisoned`] until the store is reopened (and recovery
//! re-verifies what is on disk).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::StoreError;

#[derive(Debug, Default)]
pub(crate) struct Poison(AtomicBool);

impl Poison {
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.is_set() {
            Err(StoreError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Sets the poisoned flag (logging why) and returns the error to report.
    pub(crate) fn set(&self, what: &str, err: io::Error) -> StoreError {
        self.0.store(true, Ordering::Release);
        tracing::error!(error = %err, "{what} failed; store is poisoned, writes are refused until reopen");
        StoreError::Io {
            context: format!("{what} failed (store is now poisoned)"),
            source: err,
        }
    }

    /// Passes through the result of a sync operation, poisoning on failure.
    pub(crate) fn sync<E: Into<io::Error>>(
        &self,
        what: &str,
        r: Result<(), E>,
    ) -> Result<(), StoreError> {
        r.map_err(|e| self.set(what, e.into()))
    }
}
