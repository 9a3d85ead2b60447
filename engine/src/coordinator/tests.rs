use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const GROUP: &str = "g";
const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        initial_rebalance_delay_ms: 100,
        ..CoordinatorConfig::default()
    }
}

fn join_req(member_id: &str, client: &str, version: i16) -> JoinRequest {
    JoinRequest {
        group_id: GROUP.to_owned(),
        member_id: member_id.to_owned(),
        group_instance_id: None,
        protocol_type: "consumer".to_owned(),
        protocols: vec![
            ("range".to_owned(), format!("meta-{client}").into_bytes()),
            ("roundrobin".to_owned(), Vec::new()),
        ],
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        client_id: client.to_owned(),
        client_host: "/127.0.0.1".to_owned(),
        version,
    }
}

fn sync_req(member_id: &str, generation: i32, assignments: Vec<(String, Vec<u8>)>) -> SyncRequest {
    SyncRequest {
        group_id: GROUP.to_owned(),
        generation,
        member_id: member_id.to_owned(),
        group_instance_id: None,
        protocol_type: Some("consumer".to_owned()),
        protocol_name: Some("range".to_owned()),
        assignments,
    }
}

fn join_of(ready: &[(Ticket, Outcome)], ticket: u64) -> Option<JoinResponse> {
    ready.iter().find_map(|(t, o)| match o {
        Outcome::Join(r) if *t == Ticket(ticket) => Some(r.clone()),
        _ => None,
    })
}

fn sync_of(ready: &[(Ticket, Outcome)], ticket: u64) -> Option<SyncResponse> {
    ready.iter().find_map(|(t, o)| match o {
        Outcome::Sync(r) if *t == Ticket(ticket) => Some(r.clone()),
        _ => None,
    })
}

/// A v4 member id: MEMBER_ID_REQUIRED, then the id to join with.
fn member_id(c: &mut Coordinator, now: u64, ticket: u64, client: &str) -> String {
    let ready = c.join(now, Ticket(ticket), join_req("", client, 4));
    let response = join_of(&ready, ticket).expect("answered at once");
    assert_eq!(response.error, codes::MEMBER_ID_REQUIRED);
    assert!(response.member_id.starts_with(&format!("{client}-")));
    response.member_id
}

fn tick_until_quiet(c: &mut Coordinator, until: u64) -> Vec<(Ticket, Outcome)> {
    let mut all = Vec::new();
    while let Some(deadline) = c.next_deadline() {
        if deadline > until {
            break;
        }
        all.extend(c.tick(deadline));
        c.check_invariants().expect("invariants");
    }
    all
}

/// Two members `a` (leader) and `b` in a Stable generation 1.
fn stable_pair(c: &mut Coordinator) -> (String, String) {
    let a = member_id(c, 0, 1, "a");
    let b = member_id(c, 0, 2, "b");
    assert!(c.join(0, Ticket(3), join_req(&a, "a", 4)).is_empty());
    assert!(c.join(10, Ticket(4), join_req(&b, "b", 4)).is_empty());
    let ready = tick_until_quiet(c, 1_000);
    assert_eq!(join_of(&ready, 3).expect("a joined").generation, 1);
    assert_eq!(join_of(&ready, 4).expect("b joined").generation, 1);
    let leader = c.leader(GROUP).expect("leader");
    let (leader, follower) = if leader == a { (a, b) } else { (b, a) };
    assert!(c
        .sync(1_000, Ticket(5), sync_req(&follower, 1, vec![]))
        .is_empty());
    let ready = c.sync(
        1_000,
        Ticket(6),
        sync_req(
            &leader,
            1,
            vec![
                (leader.clone(), b"L".to_vec()),
                (follower.clone(), b"F".to_vec()),
            ],
        ),
    );
    assert_eq!(sync_of(&ready, 5).expect("follower").assignment, b"F");
    assert_eq!(sync_of(&ready, 6).expect("leader").assignment, b"L");
    assert_eq!(c.describe(GROUP).state, GroupState::Stable);
    (leader, follower)
}

/// A coordinator that loses the group's slot forgets the group: a parked JoinGroup is
/// answered NOT_COORDINATOR, the group's timers go, and another group stays.
#[test]
fn forgetting_a_group_answers_its_parked_requests_not_coordinator() {
    let mut c = Coordinator::new(config(), 7);
    let (leader, _follower) = stable_pair(&mut c);
    // The leader re-joins: a rebalance starts and its JoinGroup is parked.
    assert!(c
        .join(2_000, Ticket(10), join_req(&leader, "a", 4))
        .is_empty());
    let mut other = join_req("", "z", 4);
    other.group_id = "other".to_owned();
    let _ = c.join(2_000, Ticket(11), other);
    let ready = c.forget(|g| g == GROUP);
    let answer = join_of(&ready, 10).expect("the parked join is answered");
    assert_eq!(answer.error, codes::NOT_COORDINATOR);
    assert_eq!(c.describe(GROUP).state, GroupState::Dead);
    assert_ne!(c.describe("other").state, GroupState::Dead);
    c.check_invariants().expect("invariants");
    assert!(tick_until_quiet(&mut c, 100_000)
        .iter()
        .all(|(t, _)| *t != Ticket(10)));
}

#[test]
fn single_member_v4_join_sync_becomes_stable() {
    let mut c = Coordinator::new(config(), 7);
    let id = member_id(&mut c, 0, 1, "client");
    // Parked: the initial delay has not passed.
    assert!(c.join(5, Ticket(2), join_req(&id, "client", 4)).is_empty());
    assert_eq!(c.describe(GROUP).state, GroupState::PreparingRebalance);
    assert_eq!(c.next_deadline(), Some(105));
    let ready = c.tick(105);
    let response = join_of(&ready, 2).expect("join completes after the delay");
    assert_eq!(response.error, codes::NONE);
    assert_eq!(response.generation, 1);
    assert_eq!(response.leader, id);
    assert_eq!(response.protocol_name.as_deref(), Some("range"));
    assert_eq!(response.members.len(), 1);
    assert_eq!(response.members[0].metadata, b"meta-client");
    assert_eq!(c.describe(GROUP).state, GroupState::CompletingRebalance);
    let ready = c.sync(
        110,
        Ticket(3),
        sync_req(&id, 1, vec![(id.clone(), b"all".to_vec())]),
    );
    let sync = sync_of(&ready, 3).expect("leader answered at once");
    assert_eq!(sync.error, codes::NONE);
    assert_eq!(sync.assignment, b"all");
    assert_eq!(c.describe(GROUP).state, GroupState::Stable);
    assert_eq!(c.heartbeat(120, GROUP, 1, &id, None), codes::NONE);
    c.check_invariants().expect("invariants");
}

#[test]
fn three_members_within_the_initial_delay_form_one_generation() {
    let mut c = Coordinator::new(config(), 7);
    let ids: Vec<String> = (0..3)
        .map(|i| member_id(&mut c, 0, i, &format!("c{i}")))
        .collect();
    // Joins arrive 60 ms apart: each extends the delay, so all land in generation 1.
    for (i, id) in ids.iter().enumerate() {
        let now = 60 * i as u64;
        let ready = c.join(now, Ticket(10 + i as u64), join_req(id, "c", 4));
        assert!(ready.is_empty());
        ready.iter().for_each(|_| ());
        let _ = c.tick(now);
    }
    let ready = tick_until_quiet(&mut c, 10_000);
    let responses: Vec<JoinResponse> = (10..13)
        .map(|t| join_of(&ready, t).expect("answered"))
        .collect();
    assert!(responses.iter().all(|r| r.generation == 1 && r.error == 0));
    let leaders: Vec<&JoinResponse> = responses.iter().filter(|r| !r.members.is_empty()).collect();
    assert_eq!(leaders.len(), 1, "only the leader gets the members");
    assert_eq!(leaders[0].members.len(), 3);
    assert!(responses.iter().all(|r| r.leader == leaders[0].member_id));
}

#[test]
fn initial_delay_is_bounded_by_the_rebalance_timeout() {
    let config = CoordinatorConfig {
        initial_rebalance_delay_ms: 100,
        ..CoordinatorConfig::default()
    };
    let mut c = Coordinator::new(config, 1);
    let mut request = join_req("", "a", 3);
    request.rebalance_timeout_ms = 250;
    assert!(c.join(0, Ticket(1), request).is_empty());
    // A new member every 90 ms would extend the delay forever; the rebalance timeout bounds
    // the whole initial phase to 250 ms. The clock ticks every 10 ms.
    let mut answered_at = None;
    for step in 1..100u64 {
        let now = step * 10;
        let mut ready = c.tick(now);
        if now % 90 == 0 {
            let mut request = join_req("", &format!("n{step}"), 3);
            request.rebalance_timeout_ms = 250;
            ready.extend(c.join(now, Ticket(100 + step), request));
        }
        if join_of(&ready, 1).is_some() {
            answered_at = Some(now);
            break;
        }
    }
    assert_eq!(answered_at, Some(250));
}

#[test]
fn leaving_member_triggers_rebalance_and_new_generation() {
    let mut c = Coordinator::new(config(), 7);
    let (leader, follower) = stable_pair(&mut c);
    let result = c.leave(
        2_000,
        GROUP,
        &[LeaveMember {
            member_id: follower.clone(),
            group_instance_id: None,
        }],
    );
    assert_eq!(result.members, vec![codes::NONE]);
    assert_eq!(c.describe(GROUP).state, GroupState::PreparingRebalance);
    assert_eq!(
        c.heartbeat(2_010, GROUP, 1, &leader, None),
        codes::REBALANCE_IN_PROGRESS
    );
    assert_eq!(
        c.heartbeat(2_010, GROUP, 1, &follower, None),
        codes::UNKNOWN_MEMBER_ID
    );
    // The one remaining member re-joins: everyone known has joined, so it completes at once.
    let ready = c.join(2_020, Ticket(20), join_req(&leader, "a", 4));
    let response = join_of(&ready, 20).expect("completes at once");
    assert_eq!(response.generation, 2);
    assert_eq!(response.members.len(), 1);
    c.check_invariants().expect("invariants");
}

#[test]
fn follower_rejoin_in_stable_is_answered_at_once_and_leader_rejoin_rebalances() {
    let mut c = Coordinator::new(config(), 7);
    let (leader, follower) = stable_pair(&mut c);
    let ready = c.join(2_000, Ticket(30), join_req(&follower, "b", 4));
    let response = join_of(&ready, 30).expect("at once");
    assert_eq!((response.generation, response.members.len()), (1, 0));
    assert!(c
        .join(2_000, Ticket(31), join_req(&leader, "a", 4))
        .is_empty());
    assert_eq!(c.describe(GROUP).state, GroupState::PreparingRebalance);
    let ready = c.join(2_010, Ticket(32), join_req(&follower, "b", 4));
    assert_eq!(join_of(&ready, 31).expect("leader").generation, 2);
    assert_eq!(join_of(&ready, 32).expect("follower").generation, 2);
}

#[test]
fn session_expiry_removes_member_and_rebalances() {
    let mut c = Coordinator::new(config(), 7);
    let (leader, follower) = stable_pair(&mut c);
    // Only the leader heartbeats.
    let mut now = 1_000;
    while now < 1_000 + SESSION_MS as u64 + 1 {
        now += 3_000;
        let _ = c.tick(now);
        assert_ne!(
            c.heartbeat(now, GROUP, 1, &leader, None),
            codes::UNKNOWN_MEMBER_ID
        );
    }
    assert_eq!(
        c.heartbeat(now, GROUP, 1, &follower, None),
        codes::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        c.heartbeat(now, GROUP, 1, &leader, None),
        codes::REBALANCE_IN_PROGRESS
    );
    let ready = c.join(now, Ticket(40), join_req(&leader, "a", 4));
    assert_eq!(join_of(&ready, 40).expect("alone now").generation, 2);
}

#[test]
fn member_that_never_rejoins_is_dropped_at_the_rebalance_timeout() {
    let mut c = Coordinator::new(config(), 7);
    let (leader, follower) = stable_pair(&mut c);
    // The follower keeps heartbeating but never re-joins.
    assert!(c
        .join(2_000, Ticket(50), join_req(&leader, "a", 4))
        .is_empty());
    let deadline = c.next_deadline().expect("armed");
    assert!(deadline <= 2_000 + REBALANCE_MS as u64);
    let mut now = 2_000;
    let mut answered = None;
    while answered.is_none() && now <= 2_000 + REBALANCE_MS as u64 {
        now += 1_000;
        let code = c.heartbeat(now, GROUP, 1, &follower, None);
        assert!(code == codes::REBALANCE_IN_PROGRESS || code == codes::UNKNOWN_MEMBER_ID);
        answered = join_of(&c.tick(now), 50);
    }
    let response = answered.expect("completed at the rebalance timeout");
    assert_eq!(now, 2_000 + REBALANCE_MS as u64);
    assert_eq!(response.generation, 2);
    assert_eq!(response.members.len(), 1);
    assert_eq!(
        c.heartbeat(now, GROUP, 2, &follower, None),
        codes::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn follower_sync_is_parked_until_the_leaders() {
    let mut c = Coordinator::new(config(), 7);
    let a = member_id(&mut c, 0, 1, "a");
    let b = member_id(&mut c, 0, 2, "b");
    let _ = c.join(0, Ticket(3), join_req(&a, "a", 4));
    let _ = c.join(0, Ticket(4), join_req(&b, "b", 4));
    let ready = tick_until_quiet(&mut c, 1_000);
    let leader = join_of(&ready, 3).expect("a").leader;
    let follower = if leader == a { b } else { a };
    assert!(c
        .sync(200, Ticket(5), sync_req(&follower, 1, vec![]))
        .is_empty());
    assert_eq!(c.heartbeat(300, GROUP, 1, &follower, None), codes::NONE);
    assert_eq!(
        c.validate_commit(GROUP, 1, &follower, None),
        Err(codes::REBALANCE_IN_PROGRESS)
    );
    let ready = c.sync(
        400,
        Ticket(6),
        sync_req(&leader, 1, vec![(follower.clone(), b"x".to_vec())]),
    );
    assert_eq!(sync_of(&ready, 5).expect("follower").assignment, b"x");
    assert_eq!(sync_of(&ready, 6).expect("leader").assignment, b"");
    assert_eq!(c.validate_commit(GROUP, 1, &follower, None), Ok(()));
}

#[test]
fn parked_sync_fails_when_a_new_rebalance_starts() {
    let mut c = Coordinator::new(config(), 7);
    let a = member_id(&mut c, 0, 1, "a");
    let b = member_id(&mut c, 0, 2, "b");
    let _ = c.join(0, Ticket(3), join_req(&a, "a", 4));
    let _ = c.join(0, Ticket(4), join_req(&b, "b", 4));
    let ready = tick_until_quiet(&mut c, 1_000);
    let leader = join_of(&ready, 3).expect("a").leader;
    let follower = if leader == a { b } else { a };
    assert!(c
        .sync(200, Ticket(5), sync_req(&follower, 1, vec![]))
        .is_empty());
    let newcomer = c.join(300, Ticket(6), join_req("", "c", 3));
    let sync = sync_of(&newcomer, 5).expect("parked sync failed");
    assert_eq!(sync.error, codes::REBALANCE_IN_PROGRESS);
}

#[test]
fn members_that_never_sync_are_removed() {
    let mut c = Coordinator::new(config(), 7);
    let a = member_id(&mut c, 0, 1, "a");
    let _ = c.join(0, Ticket(2), join_req(&a, "a", 4));
    let _ = tick_until_quiet(&mut c, 1_000);
    assert_eq!(c.describe(GROUP).state, GroupState::CompletingRebalance);
    let _ = c.tick(100 + REBALANCE_MS as u64);
    assert_eq!(c.describe(GROUP).state, GroupState::Empty);
    assert_eq!(c.generation(GROUP), Some(2));
}

#[test]
fn illegal_generation_and_unknown_member() {
    let mut c = Coordinator::new(config(), 7);
    let (leader, follower) = stable_pair(&mut c);
    assert_eq!(
        c.heartbeat(1_100, GROUP, 7, &leader, None),
        codes::ILLEGAL_GENERATION
    );
    assert_eq!(
        c.heartbeat(1_100, GROUP, 1, "nobody", None),
        codes::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        c.heartbeat(1_100, "other", 1, &leader, None),
        codes::UNKNOWN_MEMBER_ID
    );
    let ready = c.sync(1_100, Ticket(60), sync_req(&follower, 0, vec![]));
    assert_eq!(
        sync_of(&ready, 60).expect("at once").error,
        codes::ILLEGAL_GENERATION
    );
    let ready = c.sync(1_100, Ticket(61), sync_req("nobody", 1, vec![]));
    assert_eq!(
        sync_of(&ready, 61).expect("at once").error,
        codes::UNKNOWN_MEMBER_ID
    );
    let ready = c.join(1_100, Ticket(62), join_req("nobody", "x", 4));
    assert_eq!(
        join_of(&ready, 62).expect("at once").error,
        codes::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        c.validate_commit(GROUP, 0, &leader, None),
        Err(codes::ILLEGAL_GENERATION)
    );
    assert_eq!(
        c.validate_commit(GROUP, 1, "nobody", None),
        Err(codes::UNKNOWN_MEMBER_ID)
    );
    assert_eq!(
        c.validate_commit(GROUP, -1, "", None),
        Err(codes::UNKNOWN_MEMBER_ID),
        "a simple commit to a group in use"
    );
}

#[test]
fn join_validation() {
    let mut c = Coordinator::new(config(), 7);
    let mut bad = join_req("", "a", 4);
    bad.group_id = String::new();
    let code = |c: &mut Coordinator, r: JoinRequest| {
        join_of(&c.join(0, Ticket(1), r), 1).expect("at once").error
    };
    assert_eq!(code(&mut c, bad), codes::INVALID_GROUP_ID);
    let mut bad = join_req("", "a", 4);
    bad.session_timeout_ms = 10;
    assert_eq!(code(&mut c, bad), codes::INVALID_SESSION_TIMEOUT);
    let mut bad = join_req("", "a", 4);
    bad.protocols.clear();
    assert_eq!(code(&mut c, bad), codes::INCONSISTENT_GROUP_PROTOCOL);
    let mut bad = join_req("", "a", 4);
    bad.protocols = vec![("p".to_owned(), vec![0; (256 << 10) + 1])];
    assert_eq!(code(&mut c, bad), codes::INVALID_REQUEST);
    // A group of "consumer"/range members refuses "connect" and disjoint protocols.
    let _ = c.join(0, Ticket(2), join_req("", "a", 3));
    let mut bad = join_req("", "b", 3);
    bad.protocol_type = "connect".to_owned();
    assert_eq!(code(&mut c, bad), codes::INCONSISTENT_GROUP_PROTOCOL);
    let mut bad = join_req("", "b", 3);
    bad.protocols = vec![("sticky".to_owned(), Vec::new())];
    assert_eq!(code(&mut c, bad), codes::INCONSISTENT_GROUP_PROTOCOL);
}

#[test]
fn group_and_member_bounds_answer_errors() {
    let config = CoordinatorConfig {
        groups_max: 2,
        members_per_group_max: 2,
        ..config()
    };
    let mut c = Coordinator::new(config, 7);
    let code = |c: &mut Coordinator, group: &str, t: u64| {
        let mut r = join_req("", "m", 4);
        r.group_id = group.to_owned();
        join_of(&c.join(0, Ticket(t), r), t).map(|r| r.error)
    };
    assert_eq!(code(&mut c, "g1", 1), Some(codes::MEMBER_ID_REQUIRED));
    assert_eq!(code(&mut c, "g1", 2), Some(codes::MEMBER_ID_REQUIRED));
    assert_eq!(code(&mut c, "g1", 3), Some(codes::GROUP_MAX_SIZE_REACHED));
    assert_eq!(code(&mut c, "g2", 4), Some(codes::MEMBER_ID_REQUIRED));
    assert_eq!(
        code(&mut c, "g3", 5),
        Some(codes::COORDINATOR_NOT_AVAILABLE)
    );
    // Once g2's pending member expires, g2 is idle and can be evicted for g3.
    let _ = c.tick(SESSION_MS as u64);
    assert_eq!(code(&mut c, "g3", 6), Some(codes::MEMBER_ID_REQUIRED));
    c.check_invariants().expect("invariants");
}

#[test]
fn simple_commits() {
    let mut c = Coordinator::new(config(), 7);
    assert_eq!(c.validate_commit("kcat", -1, "", None), Ok(()));
    assert_eq!(
        c.validate_commit("kcat", 3, "m", None),
        Err(codes::ILLEGAL_GENERATION)
    );
    let _ = c.join(0, Ticket(1), join_req("", "a", 4));
    // Only a pending member: the group is still Empty.
    assert_eq!(c.validate_commit(GROUP, -1, "", None), Ok(()));
    assert_eq!(
        c.validate_commit("", -1, "", None),
        Err(codes::INVALID_GROUP_ID)
    );
}

#[test]
fn static_member_replacement_fences_the_old_id() {
    let mut c = Coordinator::new(config(), 7);
    let mut first = join_req("", "a", 5);
    first.group_instance_id = Some("inst-1".to_owned());
    let ready = c.join(0, Ticket(1), first.clone());
    assert!(ready.is_empty(), "static members skip MEMBER_ID_REQUIRED");
    let ready = tick_until_quiet(&mut c, 1_000);
    let old = join_of(&ready, 1).expect("joined").member_id;
    let ready = c.join(200, Ticket(2), first);
    assert!(
        join_of(&ready, 2).is_some(),
        "sole member: completes at once"
    );
    let new = join_of(&ready, 2).expect("joined").member_id;
    assert_ne!(old, new);
    assert_eq!(
        c.heartbeat(300, GROUP, 2, &old, Some("inst-1")),
        codes::FENCED_INSTANCE_ID
    );
    assert_eq!(
        c.heartbeat(300, GROUP, 2, &new, Some("inst-1")),
        codes::NONE
    );
    let result = c.leave(
        400,
        GROUP,
        &[LeaveMember {
            member_id: String::new(),
            group_instance_id: Some("inst-1".to_owned()),
        }],
    );
    assert_eq!(result.members, vec![codes::NONE]);
    assert_eq!(c.describe(GROUP).state, GroupState::Empty);
    c.check_invariants().expect("invariants");
}

/// KIP-345: a static member's new process joining a Stable group with the protocols it had
/// replaces its old id without a rebalance: answered at once at the same generation, the
/// leader named as before, its SyncGroup gets the kept assignment, the other member's
/// heartbeats stay NONE, and the old id is fenced. (Before, every such rejoin rebalanced the
/// group: librdkafka's other static member saw its partitions revoked and assigned again.)
#[test]
fn a_static_member_restarting_in_a_stable_group_causes_no_rebalance() {
    let mut c = Coordinator::new(config(), 7);
    let mut a = join_req("", "a", 5);
    a.group_instance_id = Some("inst-a".to_owned());
    let mut b = join_req("", "b", 5);
    b.group_instance_id = Some("inst-b".to_owned());
    assert!(c.join(0, Ticket(1), a.clone()).is_empty());
    assert!(c.join(10, Ticket(2), b).is_empty());
    let ready = tick_until_quiet(&mut c, 1_000);
    let (ja, jb) = (
        join_of(&ready, 1).expect("a"),
        join_of(&ready, 2).expect("b"),
    );
    assert_eq!((ja.generation, jb.generation), (1, 1));
    let leader = ja.leader.clone();
    let (old_a, id_b) = (ja.member_id.clone(), jb.member_id.clone());
    let mut sync_a = sync_req(&old_a, 1, vec![]);
    sync_a.group_instance_id = Some("inst-a".to_owned());
    let mut sync_b = sync_req(&id_b, 1, vec![]);
    sync_b.group_instance_id = Some("inst-b".to_owned());
    let assignments = vec![
        (old_a.clone(), b"A".to_vec()),
        (id_b.clone(), b"B".to_vec()),
    ];
    if leader == old_a {
        sync_a.assignments = assignments;
    } else {
        sync_b.assignments = assignments;
    }
    let mut ready = c.sync(1_000, Ticket(3), sync_a);
    ready.extend(c.sync(1_000, Ticket(4), sync_b));
    assert_eq!(sync_of(&ready, 3).expect("a synced").assignment, b"A");
    assert_eq!(c.describe(GROUP).state, GroupState::Stable);

    // a's process restarts: same instance id, same protocols, no member id.
    let ready = c.join(2_000, Ticket(5), a);
    let rejoined = join_of(&ready, 5).expect("answered at once");
    assert_eq!(rejoined.error, codes::NONE);
    assert_eq!(rejoined.generation, 1, "no new generation");
    assert_eq!(rejoined.leader, leader, "the leader as it was");
    assert!(rejoined.members.is_empty(), "nobody assigns again");
    let new_a = rejoined.member_id.clone();
    assert_ne!(new_a, old_a);
    assert_eq!(c.describe(GROUP).state, GroupState::Stable);
    assert_eq!(
        c.heartbeat(2_100, GROUP, 1, &id_b, Some("inst-b")),
        codes::NONE,
        "the other member is not asked to rebalance"
    );
    let mut sync = sync_req(&new_a, 1, vec![]);
    sync.group_instance_id = Some("inst-a".to_owned());
    let ready = c.sync(2_200, Ticket(6), sync);
    assert_eq!(sync_of(&ready, 6).expect("synced").assignment, b"A", "kept");
    assert_eq!(
        c.heartbeat(2_300, GROUP, 1, &old_a, Some("inst-a")),
        codes::FENCED_INSTANCE_ID
    );
    c.check_invariants().expect("invariants");
}

#[test]
fn describe_and_list() {
    let mut c = Coordinator::new(config(), 7);
    let (leader, _) = stable_pair(&mut c);
    let description = c.describe(GROUP);
    assert_eq!(description.protocol_name, "range");
    assert_eq!(description.members.len(), 2);
    let me = description
        .members
        .iter()
        .find(|m| m.member_id == leader)
        .expect("leader listed");
    assert_eq!(me.assignment, b"L");
    assert_eq!(c.describe("nope").state, GroupState::Dead);
    let list = c.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state.as_str(), "Stable");
}

// ---- proptest: random operations across a few members ----

#[derive(Debug, Clone)]
enum Op {
    Join {
        member: usize,
        fresh: bool,
        proto: u8,
    },
    Sync {
        member: usize,
        leader_assigns: bool,
    },
    Heartbeat {
        member: usize,
    },
    Leave {
        member: usize,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, any::<bool>(), 0..3u8).prop_map(|(member, fresh, proto)| Op::Join {
            member,
            fresh,
            proto
        }),
        (0..4usize, any::<bool>()).prop_map(|(member, leader_assigns)| Op::Sync {
            member,
            leader_assigns
        }),
        (0..4usize).prop_map(|member| Op::Heartbeat { member }),
        (0..4usize).prop_map(|member| Op::Leave { member }),
        prop_oneof![0..200u64, 0..15_000u64, Just(40_000u64)].prop_map(|ms| Op::Advance { ms }),
    ]
}

/// Client 3 is a static member (KIP-345); the others are dynamic.
fn instance(member: usize) -> Option<String> {
    (member == 3).then(|| "static-3".to_owned())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..80)) {
        let mut c = Coordinator::new(config(), 3);
        let mut now = 0u64;
        let mut next_ticket = 0u64;
        // Per simulated client: its member id and last generation.
        let mut ids: Vec<String> = vec![String::new(); 4];
        let mut generations: Vec<i32> = vec![-1; 4];
        let mut parked: HashSet<Ticket> = HashSet::new();
        let mut answered: HashSet<Ticket> = HashSet::new();
        let mut owner: HashMap<Ticket, usize> = HashMap::new();
        let mut last_generation = 0;
        for op in ops {
            let mut ready = Vec::new();
            let mut issued = None;
            match op {
                Op::Join { member, fresh, proto } => {
                    if fresh {
                        ids[member].clear();
                    }
                    let mut request = join_req(&ids[member], &format!("c{member}"), 4);
                    request.group_instance_id = instance(member);
                    if proto == 1 {
                        request.protocols.reverse();
                    } else if proto == 2 {
                        request.protocols.truncate(1);
                    }
                    let ticket = Ticket(next_ticket);
                    next_ticket += 1;
                    issued = Some((ticket, member));
                    ready = c.join(now, ticket, request);
                }
                Op::Sync { member, leader_assigns } => {
                    let assignments = if leader_assigns {
                        ids.iter().map(|id| (id.clone(), b"a".to_vec())).collect()
                    } else {
                        Vec::new()
                    };
                    let ticket = Ticket(next_ticket);
                    next_ticket += 1;
                    issued = Some((ticket, member));
                    let mut request = sync_req(&ids[member], generations[member], assignments);
                    request.group_instance_id = instance(member);
                    ready = c.sync(now, ticket, request);
                }
                Op::Heartbeat { member } => {
                    let instance = instance(member);
                    let _ = c.heartbeat(now, GROUP, generations[member], &ids[member], instance.as_deref());
                }
                Op::Leave { member } => {
                    let result = c.leave(now, GROUP, &[LeaveMember {
                        member_id: ids[member].clone(),
                        group_instance_id: instance(member),
                    }]);
                    ready = result.ready;
                }
                Op::Advance { ms } => {
                    now += ms;
                    ready = c.tick(now);
                }
            }
            if let Some((ticket, member)) = issued {
                parked.insert(ticket);
                owner.insert(ticket, member);
            }
            for (ticket, outcome) in ready {
                prop_assert!(parked.remove(&ticket), "ticket {ticket:?} answered but not parked");
                prop_assert!(answered.insert(ticket), "ticket {ticket:?} answered twice");
                if let (Outcome::Join(r), Some(&member)) = (&outcome, owner.get(&ticket)) {
                    if r.error == codes::NONE || r.error == codes::MEMBER_ID_REQUIRED {
                        ids[member] = r.member_id.clone();
                    }
                    if r.error == codes::NONE {
                        generations[member] = r.generation;
                    }
                }
            }
            prop_assert!(c.check_invariants().is_ok(), "{:?}", c.check_invariants());
            let description = c.describe(GROUP);
            if let Some(generation) = c.generation(GROUP) {
                prop_assert!(generation >= last_generation);
                last_generation = generation;
            }
            match c.leader(GROUP) {
                Some(leader) => prop_assert!(description.members.iter().any(|m| m.member_id == leader)),
                None => prop_assert!(description.members.is_empty()),
            }
            if description.state == GroupState::Stable {
                prop_assert!(!description.members.is_empty());
            }
        }
        // Run the clock out: every parked request is answered in the end.
        for _ in 0..20 {
            now += 40_000;
            for (ticket, _) in c.tick(now) {
                prop_assert!(parked.remove(&ticket), "ticket {ticket:?} answered but not parked");
                prop_assert!(answered.insert(ticket), "ticket {ticket:?} answered twice");
            }
        }
        prop_assert!(parked.is_empty(), "never answered: {parked:?}");
        prop_assert_eq!(c.describe(GROUP).state == GroupState::Empty || c.list().is_empty(), true);
    }
}

// ---- the async service ----

mod service {
    use super::*;
    use crate::io::sim::SimClock;
    use crate::io::SystemClock;
    use std::rc::Rc;

    #[test]
    fn dropped_waiter_does_not_leak_or_panic() {
        let clock = SimClock::new(1_000);
        let service = GroupService::new(config(), clock.clone());
        futures_lite::future::block_on(async {
            let first = service.join(join_req("", "a", 3));
            {
                let mut first = std::pin::pin!(first);
                assert!(futures_lite::future::poll_once(first.as_mut())
                    .await
                    .is_none());
                assert_eq!(service.parked(), 1);
            }
            assert_eq!(service.parked(), 0, "dropped waiter unregistered");
            // The core still completes the join; the response has nobody to go to.
            clock.advance(1_000);
            let joined = service.join(join_req("", "b", 3));
            let mut joined = std::pin::pin!(joined);
            assert!(futures_lite::future::poll_once(joined.as_mut())
                .await
                .is_none());
        });
    }

    #[test]
    fn two_concurrent_joiners_get_one_generation() {
        let builder = crate::runtime::executor_builder(glommio::Placement::Unbound, 1)
            .expect("memlock sufficient");
        let handle = builder
            .spawn(|| async move {
                let config = CoordinatorConfig {
                    initial_rebalance_delay_ms: 50,
                    ..config()
                };
                let service = Rc::new(GroupService::new(config, SystemClock));
                let stop_tx = Rc::new(crate::sync::Event::default());
                let timers = {
                    let service = Rc::clone(&service);
                    let stop = Rc::clone(&stop_tx);
                    glommio::spawn_local(async move {
                        service.run_timers(stop.listen()).await;
                    })
                };
                let member = |client: &'static str| {
                    let service = Rc::clone(&service);
                    glommio::spawn_local(async move {
                        let first = service.join(join_req("", client, 4)).await;
                        assert_eq!(first.error, codes::MEMBER_ID_REQUIRED);
                        let joined = service.join(join_req(&first.member_id, client, 4)).await;
                        assert_eq!(joined.error, codes::NONE);
                        let assignments = joined
                            .members
                            .iter()
                            .map(|m| (m.member_id.clone(), m.member_id.clone().into_bytes()))
                            .collect();
                        let mut sync = sync_req(&joined.member_id, joined.generation, assignments);
                        sync.protocol_name = joined.protocol_name.clone();
                        let synced = service.sync(sync).await;
                        assert_eq!(synced.error, codes::NONE);
                        assert_eq!(synced.assignment, joined.member_id.as_bytes());
                        joined.generation
                    })
                };
                let a = member("a");
                let b = member("b");
                let (ga, gb) = (a.await, b.await);
                assert_eq!((ga, gb), (1, 1));
                assert_eq!(service.describe(GROUP).state, GroupState::Stable);
                assert_eq!(service.parked(), 0);
                stop_tx.notify();
                timers.await;
            })
            .expect("spawn executor");
        handle.join().expect("executor thread");
    }
}

/// A member id handed out with MEMBER_ID_REQUIRED holds its group slot for at most 30 s,
/// however long the session timeout asked: one JoinGroup per group name used to keep a
/// group alive (and its slot taken) for up to 30 minutes.
#[test]
fn a_pending_member_holds_its_group_for_30_s_at_most() {
    let config = CoordinatorConfig {
        groups_max: 1,
        ..config()
    };
    let mut c = Coordinator::new(config, 7);
    let mut long = join_req("", "m", 4);
    long.group_id = "g1".to_owned();
    long.session_timeout_ms = 1_800_000;
    long.rebalance_timeout_ms = 1_800_000;
    let ready = c.join(0, Ticket(1), long);
    assert_eq!(
        join_of(&ready, 1).map(|r| r.error),
        Some(codes::MEMBER_ID_REQUIRED)
    );
    let other = |c: &mut Coordinator, t: u64, now: u64| {
        let mut r = join_req("", "m", 4);
        r.group_id = "g2".to_owned();
        join_of(&c.join(now, Ticket(t), r), t).map(|r| r.error)
    };
    assert_eq!(
        other(&mut c, 2, 1_000),
        Some(codes::COORDINATOR_NOT_AVAILABLE)
    );
    let _ = c.tick(30_001);
    assert_eq!(other(&mut c, 3, 30_001), Some(codes::MEMBER_ID_REQUIRED));
    c.check_invariants().expect("invariants");
}
