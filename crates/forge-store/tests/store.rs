//! Conformance suite for [`Store`] implementations (docs/design.md §2: one suite, every backend).
//! Each check is a plain async fn over `&dyn Store`; `store_conformance_suite!` instantiates all
//! of them for one backend constructor. PostgreSQL adds one more `store_conformance_suite!` line.

mod suite;

use std::any::Any;
use std::sync::Arc;

use forge_store::{SqliteStore, Store};

/// A store plus whatever must live as long as it (a temp dir, a database).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    _guard: Box<dyn Any + Send>,
}

macro_rules! store_conformance_suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            use super::suite;
            macro_rules! check {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let fx = $make().await;
                        suite::$name(fx.store.clone()).await;
                    }
                };
            }
            check!(scenario_lifecycle);
            check!(transition_is_compare_and_set);
            check!(insert_is_idempotent_per_tenant_request);
            check!(concurrent_inserts_yield_one_scenario_and_one_charge);
            check!(count_list_and_runtime_info);
            check!(idempotency_key_states);
            check!(idempotency_concurrent_begin_has_one_winner);
            check!(idempotency_expiry_lease_and_purge);
            check!(ledger_queries);
            check!(outbox_delivery_bookkeeping);
            check!(quota_is_enforced_atomically);
        }
    };
}

async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(dir),
    }
}

store_conformance_suite!(sqlite, crate::sqlite_fixture);

/// SQLite specifics: the file lives in the data dir, migrations run once, data survives reopen.
#[tokio::test]
async fn sqlite_reopen_keeps_data_and_migrations_are_idempotent() {
    use forge_store::{Billing, NewScenario};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    assert_eq!(store.path(), dir.path().join("forge.db"));
    let new: NewScenario = suite::new_scenario("t1", "r1");
    store.insert_pending(&new, Billing::None).await.unwrap();
    store.close().await;
    let again = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    let got = again.get("t1", &new.scenario_id).await.unwrap().unwrap();
    assert_eq!(got.request_id, "r1");
    // WAL is what lets readers run beside the writer; its file exists while the store is open.
    assert!(dir.path().join("forge.db-wal").exists());
}
