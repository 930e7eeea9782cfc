//! openraft's storage conformance suite, run against the real sled stores.

use ipkeep_store::storage::{self, LogStore, StateMachineStore, StorageOptions};
use ipkeep_store::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) =
            storage::open(dir.path(), &StorageOptions::default()).expect("open storage");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_storage_passes_openraft_suite() {
    if let Err(e) = Suite::test_all(SledBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}
