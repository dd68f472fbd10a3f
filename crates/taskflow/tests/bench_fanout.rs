//! `taskflow bench fanout` run once at a tiny scale: every phase starts real `taskflow serve`
//! processes and load generators, opens SSE and WebSocket streams from 127.0.0.x addresses and
//! reports figures that hang together.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn the_fanout_benchmark_measures_every_phase_at_a_tiny_scale() {
    let dir = std::env::temp_dir().join(format!("taskflow-fanout-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskflow"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TASKFLOW_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    let output = command
        .current_dir(&dir)
        .args([
            "bench",
            "fanout",
            "--rounds",
            "2",
            "--changes",
            "5",
            "--sessions",
            "30",
            "--connections",
            "60",
            "--servers",
            "2",
            "--clients",
            "2",
            "--sessions-per-user",
            "4",
            "--heartbeat-secs",
            "1",
            "--hold-secs",
            "3",
            "--out-dir",
        ])
        .arg(dir.join("results"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("why several processes"), "{printed}");
    let result: Value =
        serde_json::from_slice(&std::fs::read(dir.join("results/fanout.json")).unwrap()).unwrap();

    for kind in ["sse", "ws"] {
        let single = &result["single_user"][kind];
        assert_eq!(single["missed"], 0, "{kind}: {single}");
        let (p50, p99) = (
            single["commit_to_frame_p50_ms_median"].as_f64().unwrap(),
            single["commit_to_frame_p99_ms_median"].as_f64().unwrap(),
        );
        assert!(p50 >= 0.0 && p99 >= p50, "{kind}: {single}");
        assert!(
            single["sent_to_frame_p99_ms_median"].as_f64().unwrap() > 0.0,
            "{kind}: {single}"
        );

        let fan = &result["fanout"][kind];
        assert_eq!(fan["opened"], 30, "{kind}: {fan}");
        assert_eq!(
            fan["every_change_reached_every_session"], true,
            "{kind}: {fan}"
        );
        assert_eq!(fan["still_open"], 30, "{kind}: {fan}");
        assert!(
            fan["bytes_per_idle_connection"]
                .as_f64()
                .unwrap()
                .is_finite(),
            "{kind}: {fan}"
        );
        assert!(
            fan["commit_to_frame_p99_ms_median"].as_f64().unwrap()
                >= fan["commit_to_frame_p50_ms_median"].as_f64().unwrap(),
            "{kind}: {fan}"
        );
    }

    let concurrent = &result["concurrent"];
    assert_eq!(concurrent["opened"], 60, "{concurrent}");
    assert_eq!(concurrent["users"], 15, "{concurrent}");
    assert_eq!(concurrent["alive_at_end"], 60, "{concurrent}");
    assert_eq!(
        concurrent["with_heartbeat_during_hold"], 60,
        "every stream saw a heartbeat while held: {concurrent}"
    );
    assert_eq!(concurrent["received_their_change"], 60, "{concurrent}");
    let on_writer = &concurrent["change_to_frame_on_writing_process"];
    let on_others = &concurrent["change_to_frame_on_other_processes"];
    assert_eq!(
        on_writer["streams"].as_u64().unwrap() + on_others["streams"].as_u64().unwrap(),
        60,
        "{concurrent}"
    );
    let memory = concurrent["memory"].as_array().unwrap();
    assert_eq!(memory.len(), 2);
    assert_eq!(
        memory
            .iter()
            .map(|m| m["streams"].as_u64().unwrap())
            .sum::<u64>(),
        60
    );
    assert_eq!(concurrent["meets_goal"], false, "60 streams are not 50 000");
    let _ = std::fs::remove_dir_all(&dir);
}
