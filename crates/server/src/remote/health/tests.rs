//! The tracker's unit tests: scripts of outcomes at chosen times.

use super::*;

fn denied() -> Error {
    Error::Denied {
        op: "put",
        source: "InvalidAccessKeyId".into(),
    }
}

fn timeout() -> Error {
    Error::Timeout {
        op: "get",
        after: Duration::from_secs(1),
    }
}

fn unavailable() -> Error {
    Error::Unavailable {
        op: "put",
        source: "503 SlowDown".into(),
    }
}

fn conflicts() -> Error {
    Error::Precondition {
        op: "put",
        name: "p/o/abc".into(),
        attempts: 16,
    }
}

/// What a tracker says along a script of outcomes, at the times given.
#[derive(Default)]
struct Seen {
    states: Vec<(Duration, Health)>,
    lines: Vec<Line>,
}

enum Step {
    Fail(&'static str, Error),
    Answer(&'static str),
}

fn run(t: &Tracker, t0: Instant, script: Vec<(Duration, Step)>) -> Seen {
    let mut seen = Seen::default();
    for (at, step) in script {
        let now = t0 + at;
        let line = match step {
            Step::Fail(what, e) => t.failed_at(what, &e, now),
            Step::Answer(what) => t.answered_at(what, false, now),
        };
        seen.lines.extend(line);
        let ((h, _), line) = t.get_at(now);
        seen.lines.extend(line);
        seen.states.push((at, h));
    }
    seen
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn warns(lines: &[Line]) -> usize {
    lines
        .iter()
        .filter(|l| !matches!(l, Line::Back { .. }))
        .count()
}

#[test]
fn tier_wide_failures_set_the_state_and_an_answer_clears_it() {
    let t = Tracker::new(&CredentialSource::Env);
    assert_eq!(t.get(), (Health::Ok, None));
    t.failed("upload", &Error::Invalid("one object's metadata".into()));
    assert_eq!(
        t.get().0,
        Health::Ok,
        "a failure of one object says nothing"
    );
    t.failed("upload", &denied());
    let (h, last) = t.get();
    assert_eq!(h, Health::Refused);
    assert!(last.unwrap().contains("InvalidAccessKeyId"));
    t.failed("fetch", &timeout());
    assert_eq!(
        t.get().0,
        Health::Refused,
        "the gravest of the kinds failing"
    );
    t.failed("check", &Error::NoBucket { op: "check" });
    assert_eq!(t.get().0, Health::NoBucket);
    // The tier back: the first answer, of any kind, clears what failed meanwhile.
    t.answered("check");
    assert_eq!(t.get(), (Health::Ok, None));
}

/// Every PUT answered 503 while the polls are answered: the state used to flip at
/// every poll and every upload, with a WARN and an INFO line each time (42 lines in
/// 40 s). Now it settles on `unreachable` at the second failure and stays there.
#[test]
fn a_kind_that_keeps_failing_while_others_answer_keeps_the_state() {
    let t = Tracker::new(&CredentialSource::Env);
    let mut script = Vec::new();
    for n in 0..40 {
        script.push((secs(n as f64), Step::Fail("upload", unavailable())));
        if n % 4 == 0 {
            script.push((secs(n as f64 + 0.5), Step::Answer(POLL)));
        }
    }
    let seen = run(&t, Instant::now(), script);
    let after: Vec<_> = seen
        .states
        .iter()
        .filter(|(at, _)| *at >= secs(1.0))
        .collect();
    assert!(
        after.iter().all(|(_, h)| *h == Health::Unreachable),
        "{after:?}"
    );
    assert!(seen.lines.len() <= 2, "{:#?}", seen.lines);
    assert!(matches!(
        seen.lines[0],
        Line::Bad {
            state: Health::Unreachable,
            ..
        }
    ));
}

/// Garbage for every LIST of the event log while uploads are answered: the tier is
/// failing, from the first failed poll on, and says so once.
#[test]
fn a_poll_of_the_event_log_failing_is_the_tier_failing_whatever_else_answers() {
    let t = Tracker::new(&CredentialSource::Env);
    let mut script = Vec::new();
    for n in 0..40 {
        script.push((secs(n as f64), Step::Answer("upload")));
        if n % 4 == 0 {
            script.push((secs(n as f64 + 0.5), Step::Fail(POLL, unavailable())));
        }
    }
    let seen = run(&t, Instant::now(), script);
    let after: Vec<_> = seen
        .states
        .iter()
        .filter(|(at, _)| *at >= secs(0.5))
        .collect();
    assert!(
        after.iter().all(|(_, h)| *h == Health::Unreachable),
        "{after:?}"
    );
    assert_eq!(seen.lines.len(), 1, "{:#?}", seen.lines);
    // A poll answered: over.
    assert!(t
        .answered_at(POLL, false, Instant::now() + secs(41.0))
        .is_some());
    assert_eq!(t.get().0, Health::Ok);
}

/// A kind that fails every other request flaps, and its log does not: at most one
/// WARN and one INFO a minute, the WARN counting the failures and changes between.
#[test]
fn a_flapping_state_logs_at_most_one_warn_and_one_info_a_minute() {
    let t = Tracker::new(&CredentialSource::Env);
    let mut script = Vec::new();
    for n in 0..180 {
        let at = secs(n as f64);
        if n % 2 == 0 {
            script.push((at, Step::Fail("read-through", timeout())));
        } else {
            script.push((at, Step::Answer("read-through")));
        }
    }
    let seen = run(&t, Instant::now(), script);
    let (w, i) = (warns(&seen.lines), seen.lines.len() - warns(&seen.lines));
    assert!((3..=4).contains(&w), "{:#?}", seen.lines);
    assert!(i <= w, "{:#?}", seen.lines);
    let Some(Line::Bad {
        failed, changes, ..
    }) = seen
        .lines
        .iter()
        .rev()
        .find(|l| matches!(l, Line::Bad { .. }))
    else {
        panic!("{:#?}", seen.lines)
    };
    assert!(*failed >= 25 && *changes >= 50, "{:#?}", seen.lines);
}

/// A kind that failed on its own, and is not tried again, is forgotten after a while;
/// one that keeps failing is not.
#[test]
fn a_failure_not_repeated_is_forgotten_after_a_while() {
    let t = Tracker::new(&CredentialSource::Env);
    let t0 = Instant::now();
    let seen = run(
        &t,
        t0,
        vec![
            (secs(0.0), Step::Fail("upload", unavailable())),
            (secs(0.5), Step::Answer(POLL)),
            (secs(1.0), Step::Fail("upload", unavailable())),
            (secs(1.5), Step::Answer(POLL)),
        ],
    );
    assert_eq!(seen.states.last().unwrap().1, Health::Unreachable);
    assert_eq!(
        t.get_at(t0 + secs(1.0) + HOLD - secs(0.1)).0 .0,
        Health::Unreachable
    );
    let ((h, _), line) = t.get_at(t0 + secs(1.0) + HOLD);
    assert_eq!(h, Health::Ok);
    assert_eq!(
        line, None,
        "its second spell was within a minute of the first WARN: neither it nor its \
         end is logged"
    );
    // The poll's failure is not forgotten: a poll is made every poll interval.
    t.failed_at(POLL, &unavailable(), t0);
    assert_eq!(t.get_at(t0 + HOLD * 10).0 .0, Health::Unreachable);
}

/// A conditional write refused at every attempt says `conflicting`, with the likely
/// cause, until a write over an existing object is taken, or none was refused for a
/// while: creates of new keys and other answers do not clear it.
#[test]
fn refused_conditional_writes_show_until_a_write_over_an_object_is_taken() {
    let t = Tracker::new(&CredentialSource::Env);
    let t0 = Instant::now();
    let line = t.failed_at("upload", &conflicts(), t0);
    assert!(matches!(
        line,
        Some(Line::Bad {
            state: Health::Conflicting,
            ..
        })
    ));
    assert!(Health::Conflicting
        .advice("")
        .contains("ETags that If-Match"));
    t.answered_at("upload", false, t0);
    t.answered_at(POLL, false, t0);
    t.answered_at("delete or purge", true, t0);
    let ((h, err), _) = t.get_at(t0);
    assert_eq!(h, Health::Conflicting);
    assert!(err.unwrap().contains("412"));
    assert!(t.get().0 == Health::Conflicting);
    t.replaced(0);
    assert_eq!(t.get().0, Health::Conflicting);
    t.replaced(1);
    assert_eq!(t.get(), (Health::Ok, None));
    // Or by time.
    t.failed_at("delete or purge", &conflicts(), t0);
    assert_eq!(t.get_at(t0 + HOLD).0 .0, Health::Ok);
    // A graver state of another kind shows first.
    let t1 = Instant::now();
    t.failed_at("upload", &conflicts(), t1);
    t.failed_at("read-through", &timeout(), t1);
    assert_eq!(t.get_at(t1).0 .0, Health::Unreachable);
}

/// A refusal's advice names the credentials this host uses, not every source.
#[test]
fn the_advice_of_a_refusal_names_the_configured_source() {
    let advice = |s: CredentialSource| Health::Refused.advice(&check_credentials(&s));
    let imds = advice(CredentialSource::Instance);
    assert!(imds.contains("instance metadata service"), "{imds}");
    assert!(!imds.contains("AWS_ACCESS_KEY_ID"), "{imds}");
    let file = advice(CredentialSource::File("/etc/objmapper/s3".into()));
    assert!(
        file.contains("credentials file /etc/objmapper/s3"),
        "{file}"
    );
    assert!(!file.contains("AWS_ACCESS_KEY_ID"), "{file}");
    let env = advice(CredentialSource::Env);
    assert!(env.contains("AWS_ACCESS_KEY_ID"), "{env}");
    assert!(!env.contains("--remote-credentials-file"), "{env}");
}

#[test]
fn a_damaged_purge_set_stays_until_a_request_reads_the_set() {
    let t = Tracker::new(&CredentialSource::Env);
    t.failed(
        "read-through",
        &Error::PurgeSetDamaged {
            name: "p/purges".into(),
            why: "checksum".into(),
        },
    );
    assert_eq!(t.get().0, Health::PurgeSetDamaged);
    t.answered(POLL);
    assert_eq!(
        t.get().0,
        Health::PurgeSetDamaged,
        "the event log answering"
    );
    t.answered("read-through");
    assert_eq!(
        t.get().0,
        Health::PurgeSetDamaged,
        "its own kind, not the set"
    );
    t.answered_with_purges("upload");
    assert_eq!(t.get(), (Health::Ok, None));
}

#[test]
fn a_long_error_is_cut_on_a_character_boundary() {
    let t = Tracker::new(&CredentialSource::Env);
    let long = "é".repeat(LAST_ERROR_MAX);
    t.failed(
        "upload",
        &Error::Denied {
            op: "put",
            source: long.into(),
        },
    );
    let last = t.get().1.unwrap();
    assert!(last.len() <= LAST_ERROR_MAX + 3, "{}", last.len());
    assert!(last.ends_with("..."));
}
