//! Conformance suite for [`Store`] implementations (docs/design.md §2: one suite, every backend).
//! Each check is a plain async fn over `&dyn Store`; `store_conformance_suite!` instantiates all
//! of them for one backend constructor: SQLite on a temp dir, PostgreSQL on a fresh database of
//! a server the tests start themselves (`forge_testkit::servers`). Backends that replicas share also run the
//! `suite::replicas_*` checks, on two handles of one database.

mod suite;

use std::any::Any;
use std::sync::Arc;

use forge_store::{PgStore, SqliteStore, Store, StoreError};
use forge_testkit::servers::TestDatabase;

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
            check!(a_lab_that_failed_before_running_is_refunded_once);
            check!(quota_is_enforced_atomically);
            check!(claim_has_one_winner_and_records_the_host);
            check!(leases_are_registered_renewed_and_listed);
            check!(ping_answers);
            check!(tenant_list_is_newest_first_scoped_and_limited);
            check!(extensions_add_up_and_stop_at_the_cap);
            check!(the_last_check_of_a_running_lab_is_kept);
            check!(warm_labs_are_taken_once_oldest_first_and_counted);
            check!(concurrent_takers_get_different_labs);
            check!(a_warm_start_runs_a_pending_scenario_on_the_labs_host_once);
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

async fn postgres_fixture() -> Fixture {
    let db = TestDatabase::create().await;
    let store = PgStore::connect(&db.url()).await.unwrap();
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(db),
    }
}

store_conformance_suite!(postgres, crate::postgres_fixture);

/// Two replicas: two stores, each with its own pool, on one database.
async fn postgres_replicas() -> (Arc<dyn Store>, Arc<dyn Store>, TestDatabase) {
    let db = TestDatabase::create().await;
    let a = PgStore::connect(&db.url()).await.unwrap();
    let b = PgStore::connect(&db.url()).await.unwrap();
    (Arc::new(a), Arc::new(b), db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_claim_a_key_once() {
    let (a, b, _db) = postgres_replicas().await;
    suite::replicas_claim_a_key_once(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_refund_once() {
    let (a, b, _db) = postgres_replicas().await;
    suite::replicas_refund_once(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_insert_once_and_keep_the_quota() {
    let (a, b, _db) = postgres_replicas().await;
    suite::replicas_insert_once_and_keep_the_quota(a, b).await;
}

/// PostgreSQL specifics: migrations run once per database whoever connects, data outlives a
/// store, and a connection error never repeats the url's password.
#[tokio::test]
async fn postgres_reconnect_keeps_data_and_errors_hide_the_password() {
    use forge_store::{Billing, NewScenario};
    let db = TestDatabase::create().await;
    let store = PgStore::connect(&db.url()).await.unwrap();
    let new: NewScenario = suite::new_scenario("t1", "r1");
    store.insert_pending(&new, Billing::None).await.unwrap();
    store.close().await;
    let again = PgStore::connect(&db.url()).await.unwrap();
    let got = again.get("t1", &new.scenario_id).await.unwrap().unwrap();
    assert_eq!(got.request_id, "r1");
    again.close().await;

    let url = db.url().replace("postgres@", "postgres:s3cret@") + "_missing";
    match PgStore::connect(&url).await {
        Err(e @ StoreError::Open { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("_missing") && !msg.contains("s3cret"), "{msg}");
        }
        other => panic!("expected an open error, got {other:?}"),
    }
}

/// A closed store fails its readiness ping, naming the database file.
#[tokio::test]
async fn sqlite_ping_fails_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    store.ping().await.unwrap();
    store.close().await;
    let e = store.ping().await.unwrap_err().to_string();
    assert!(e.contains("forge.db"), "{e}");
}

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

/// The writer never checkpoints (no `fsync` inside a commit); the checkpoint thread copies the
/// WAL back into the database file in the background, so the file grows without a restart.
#[tokio::test]
async fn sqlite_checkpoints_in_the_background() {
    use forge_store::{Billing, NewScenario};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path()).await.unwrap();
    let db = dir.path().join("forge.db");
    let size = || std::fs::metadata(&db).unwrap().len();
    // Let a round copy what the migrations left in the WAL, then measure from there.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let before = size();
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..300 {
        let store = store.clone();
        writes.spawn(async move {
            let new: NewScenario = suite::new_scenario("t1", &format!("r{i}"));
            store.insert_pending(&new, Billing::None).await.unwrap();
        });
    }
    while let Some(done) = writes.join_next().await {
        done.unwrap();
    }
    // The writes sit in the WAL; within a few rounds they are in the database file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {before} bytes: nothing was checkpointed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store.close().await;
}
