//! Runs `tidelog-bench --smoke` against a real `tidelog serve` process (~20,000 records end
//! to end over Kafka and then over the native protocol, every one checked) so that
//! `cargo test --workspace` keeps the load generator, both targets included, from rotting.
//! The generator links no broker code: it reaches the broker over its sockets, as users do.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::broker_process::{free_port, serial, Broker, Kafka, Serve};

#[test]
fn smoke_run_consumes_every_record() {
    let _one = serial();
    let tmp = crate::test_dir("bench-smoke");
    let mut serve = Serve::new();
    serve.shards = 1;
    serve.kafka = Kafka::At(format!("127.0.0.1:{}", free_port()));
    // The default preallocation is sized for production disks.
    serve.extra = vec!["--preallocate-bytes".into(), (1 << 20).to_string()];
    let broker = Broker::start_with(&tmp.path().join("data"), 0, serve);
    let json = tmp.path().join("smoke.json");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tidelog-bench-under-test"))
        .args([
            "--smoke",
            "--broker",
            &broker.addr,
            "--smoke-kafka",
            broker.kafka(),
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run tidelog-bench");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tidelog-bench --smoke failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker:\n{}",
        out.status,
        broker.stderr()
    );
    assert!(
        stdout.contains("smoke: kafka ok"),
        "the Kafka target ran: {stdout}"
    );
    assert!(stdout.contains("smoke: ok"), "{stdout}");
    assert!(
        elapsed < Duration::from_secs(20),
        "smoke took {elapsed:?}; it must stay short to run in every test pass"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON report written"))
            .expect("valid JSON");
    assert_eq!(report["produce"]["records"], 20_000);
    assert_eq!(report["consume"]["records"], 20_000);
    assert_eq!(report["e2e"]["latency_us"]["count"], 20_000);
    for key in ["records_per_s", "mb_per_s"] {
        assert!(report["produce"][key].as_f64().expect(key) > 0.0, "{key}");
        assert!(report["consume"][key].as_f64().expect(key) > 0.0, "{key}");
    }
    for p in ["p50", "p90", "p99", "p999", "p9999", "max"] {
        assert!(report["produce"]["latency_us"][p].as_u64().is_some(), "{p}");
        assert!(report["e2e"]["latency_us"][p].as_u64().is_some(), "{p}");
    }
    assert_eq!(report["params"]["mode"], "e2e");
    assert!(report["hardware"]["kernel"].is_string());
    assert!(report["git_rev"].is_string());
    assert!(report["series"].is_array());
    assert!(report["broker"].is_null(), "no --broker-pid");
    assert!(report["errors"].as_object().expect("errors").is_empty());
    broker.stop();
}
