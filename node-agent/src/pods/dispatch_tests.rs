//! The pod loop's dispatch on tables of events: which worker starts, which
//! is poked, what is held back before the first list and after a pod finished.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;

use crate::pods::container_runtime::Fingerprint;
use crate::pods::dispatch::{Dispatch, Order, PodUpdate, FINISHED_MEMORY};

fn key(uid: &str) -> ObjectRef<Pod> {
    ObjectRef::new(&format!("pod-{uid}")).within("default")
}

fn update(uid: &str, desired: u64) -> PodUpdate {
    PodUpdate {
        uid: uid.into(),
        pod: key(uid),
        desired,
    }
}

fn start(uid: &str) -> Order {
    Order::Start {
        uid: uid.into(),
        pod: Some(key(uid)),
    }
}

fn orphan(uid: &str) -> Order {
    Order::Start {
        uid: uid.into(),
        pod: None,
    }
}

fn poke(uid: &str) -> Order {
    Order::Poke(uid.into())
}

fn relist(pods: &[(&str, &[(&str, i32)])]) -> BTreeMap<String, Fingerprint> {
    pods.iter()
        .map(|(uid, objects)| {
            let fingerprint = objects.iter().map(|(id, s)| (id.to_string(), *s)).collect();
            (uid.to_string(), fingerprint)
        })
        .collect()
}

fn known(uids: &[&str]) -> BTreeSet<String> {
    uids.iter().map(|u| u.to_string()).collect()
}

fn listed(uids: &[&str]) -> Dispatch {
    let mut d = Dispatch::new();
    let orders = d.listed(uids.iter().map(|u| update(u, 1)));
    assert_eq!(orders, uids.iter().map(|u| start(u)).collect::<Vec<_>>());
    d
}

#[test]
fn nothing_starts_or_goes_before_the_first_list() {
    let mut d = Dispatch::new();
    assert_eq!(d.pod_applied(update("a", 1)), []);
    assert_eq!(d.pod_deleted("b", key("b")), []);
    assert_eq!(
        d.relisted(relist(&[("orphan", &[("s1", 0)])]), &known(&[])),
        []
    );
    assert_eq!(d.resync(Instant::now()), []);
    assert_eq!(
        d.leftovers(["gone".to_string()], &known(&[])),
        Vec::<String>::new()
    );
    assert!(!d.has_worker("a"));

    // The list is what counts: the pods it returned start, and the
    // sandbox seen before it is judged on the next relist.
    assert_eq!(d.listed([update("a", 1)]), [start("a")]);
    assert_eq!(
        d.relisted(relist(&[("orphan", &[("s1", 0)])]), &known(&["a"])),
        [orphan("orphan")]
    );
}

#[test]
fn the_first_list_adopts_every_pod_once() {
    let mut d = listed(&["a", "b"]);
    assert!(d.has_worker("a") && d.has_worker("b"));
    // The watch lists again with nothing missed: the pods it finds are
    // news only where they changed; no second worker starts.
    let again = d.listed([update("a", 1), update("b", 1)]);
    assert!(
        !again.iter().any(|o| matches!(o, Order::Start { .. })),
        "{again:?}"
    );
}

#[test]
fn a_list_after_a_watch_gap_catches_up_with_the_events_it_swallowed() {
    let mut d = listed(&["stays", "goes"]);
    assert_eq!(d.pod_applied(update("stays", 1)), [poke("stays")]);
    assert_eq!(d.pod_applied(update("goes", 1)), [poke("goes")]);
    // While the watch was down, "new" was created, "stays" was changed and
    // "goes" was deleted; the list after the gap is all that tells.
    let orders = d.listed([update("stays", 2), update("new", 1)]);
    assert_eq!(orders, [poke("stays"), start("new"), poke("goes")]);
}

#[test]
fn one_worker_per_pod_later_events_poke_it() {
    let mut d = listed(&[]);
    for (event, want) in [
        (update("a", 1), vec![start("a")]),
        (update("a", 2), vec![poke("a")]),
        (update("b", 1), vec![start("b")]),
        (update("a", 3), vec![poke("a")]),
    ] {
        assert_eq!(d.pod_applied(event.clone()), want, "{event:?}");
    }
}

#[test]
fn a_status_change_alone_pokes_nobody_a_spec_change_pokes_the_worker() {
    let mut d = listed(&[]);
    assert_eq!(d.pod_applied(update("a", 7)), [start("a")]);
    // The worker's own status patch comes back: same spec, nothing to do.
    assert_eq!(d.pod_applied(update("a", 7)), []);
    assert_eq!(d.pod_applied(update("a", 8)), [poke("a")]);
}

#[test]
fn a_deleted_pod_wakes_its_worker_or_gets_one_to_clean_up() {
    let mut d = listed(&["a"]);
    assert_eq!(d.pod_deleted("a", key("a")), [poke("a")]);
    assert_eq!(d.pod_deleted("b", key("b")), [start("b")]);
}

#[test]
fn late_events_about_a_finished_pod_start_no_second_termination() {
    let t0 = Instant::now();
    let mut d = listed(&["a"]);
    d.worker_finished("a", t0);
    assert!(!d.has_worker("a"));
    assert_eq!(d.pod_applied(update("a", 9)), []);
    assert_eq!(d.pod_deleted("a", key("a")), []);
    // Remembered for FINISHED_MEMORY, then forgotten at a resync.
    assert_eq!(d.resync(t0 + FINISHED_MEMORY - Duration::from_secs(1)), []);
    assert_eq!(d.pod_applied(update("a", 10)), []);
    assert_eq!(d.resync(t0 + FINISHED_MEMORY), []);
    assert_eq!(d.pod_applied(update("a", 11)), [start("a")]);
}

#[test]
fn a_relist_pokes_only_the_workers_whose_pods_changed_in_the_runtime() {
    let mut d = listed(&["a", "b"]);
    let both = &known(&["a", "b"]);
    // The first relist is news about every pod.
    assert_eq!(
        d.relisted(relist(&[("a", &[("s1", 0)]), ("b", &[("s2", 0)])]), both),
        [poke("a"), poke("b")]
    );
    assert_eq!(
        d.relisted(relist(&[("a", &[("s1", 0)]), ("b", &[("s2", 0)])]), both),
        []
    );
    // b's container exited.
    assert_eq!(
        d.relisted(
            relist(&[("a", &[("s1", 0)]), ("b", &[("c1", 102), ("s2", 0)])]),
            both
        ),
        [poke("b")]
    );
}

#[test]
fn a_pod_the_runtime_holds_and_the_api_does_not_gets_an_orphan_worker_once() {
    let t0 = Instant::now();
    let mut d = listed(&["a"]);
    let only_a = &known(&["a"]);
    assert_eq!(
        d.relisted(
            relist(&[("a", &[("s1", 0)]), ("gone", &[("s9", 1)])]),
            only_a
        ),
        [poke("a"), orphan("gone")]
    );
    assert_eq!(
        d.relisted(
            relist(&[("a", &[("s1", 0)]), ("gone", &[("s9", 1)])]),
            only_a
        ),
        []
    );
    // Finished, but CRI still shows it: cleaned up again, memory or not.
    d.worker_finished("gone", t0);
    assert_eq!(
        d.relisted(relist(&[("gone", &[("s9", 1)])]), only_a),
        [orphan("gone")]
    );
}

#[test]
fn a_relist_and_a_watch_event_about_one_pod_poke_its_one_worker() {
    let mut d = listed(&["a"]);
    let a = &known(&["a"]);
    assert_eq!(d.relisted(relist(&[("a", &[("c1", 101)])]), a), [poke("a")]);
    // The container exited and the Pod changed at the same moment: two
    // pokes of the same worker (they coalesce in its channel), no second worker.
    let mut orders = d.relisted(relist(&[("a", &[("c1", 102)])]), a);
    orders.extend(d.pod_applied(update("a", 2)));
    assert_eq!(orders, [poke("a"), poke("a")]);
}

#[test]
fn a_probe_flip_pokes_only_a_running_worker() {
    let mut d = listed(&["a"]);
    assert_eq!(d.probe_flipped("a"), [poke("a")]);
    assert_eq!(d.probe_flipped("b"), []);
    d.worker_finished("a", Instant::now());
    assert_eq!(d.probe_flipped("a"), []);
}

#[test]
fn the_resync_pokes_every_worker() {
    let mut d = listed(&["a", "b"]);
    assert_eq!(d.resync(Instant::now()), [poke("a"), poke("b")]);
}

#[test]
fn leftover_directories_are_those_of_no_worker_and_no_pod() {
    let mut d = listed(&["a"]);
    d.pod_deleted("b", key("b"));
    let on_disk = ["a", "b", "c", "d"].map(String::from);
    assert_eq!(d.leftovers(on_disk, &known(&["a", "d"])), ["c"]);
}

#[test]
fn a_panicked_worker_starts_again_at_the_next_resync() {
    let mut d = listed(&["a", "b"]);
    d.worker_panicked("a", Some(key("a")));
    assert!(!d.has_worker("a"));
    // Nothing wakes it before the resync: the probe flip finds no worker.
    assert_eq!(d.probe_flipped("a"), []);
    assert_eq!(d.resync(Instant::now()), [poke("b"), start("a")]);
    assert!(d.has_worker("a"));
    // Once only.
    assert_eq!(d.resync(Instant::now()), [poke("a"), poke("b")]);
}

#[test]
fn a_panicked_worker_restarted_by_an_event_is_not_started_twice() {
    let mut d = listed(&["a"]);
    d.worker_panicked("a", Some(key("a")));
    assert_eq!(d.pod_applied(update("a", 5)), [start("a")]);
    assert_eq!(d.resync(Instant::now()), [poke("a")]);
}
