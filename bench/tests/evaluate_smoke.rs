//! The evaluation's smoke run, end to end: real ringkv nodes, the real
//! driver, the real document and plots, with small n and short phases so
//! that `scripts/evaluate.sh` cannot rot between full runs.

use std::process::Command;

use ringkv_bench::{evaluate::Report, workload::Workload};

#[test]
fn the_smoke_evaluation_writes_the_document_plots_and_figures() {
    let docs = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv-bench"))
        .args(["evaluate", "--smoke", "--first-address", "127.96.0.1"])
        .arg("--docs-dir")
        .arg(docs.path())
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    println!("{log}");
    assert!(output.status.success(), "evaluate failed: {log}");

    let document = std::fs::read_to_string(docs.path().join("benchmarks.md")).unwrap();
    for section in [
        "## Goals",
        "## 1. The seed's table, through the network",
        "## 2. Peers side by side",
        "## 3. Scalability",
        "## 4. Fault tolerance",
        "## 5. Eventual consistency",
    ] {
        assert!(document.contains(section), "no {section:?} in the document");
    }
    let plots = docs.path().join("benchmarks");
    let mut pngs = 0;
    for entry in std::fs::read_dir(&plots).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{} is no PNG",
                path.display()
            );
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                document.contains(&format!("(benchmarks/{name})")),
                "{name} is not in the document"
            );
            pngs += 1;
        }
    }
    assert!(pngs >= 6, "only {pngs} plots");

    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(plots.join("results.json")).unwrap())
            .unwrap();
    // Every seed-table cell ran without a failed request and has its
    // in-process baseline.
    assert_eq!(report.seed_table.len(), 4);
    for configuration in &report.seed_table {
        for row in &configuration.rows {
            for timing in [&row.put, &row.get, &row.delete] {
                assert_eq!(timing.errors, 0, "{}: {timing:?}", configuration.name);
                assert!(timing.seconds > 0.0);
            }
            assert!(row.limit_put_seconds > 0.0 && row.limit_get_seconds > 0.0);
        }
    }
    assert!(report
        .peers
        .runs
        .iter()
        .any(|r| r.system == "ringkv" && r.measurement.requests > 0));
    // The performance goals' batch run, at their concurrency, with its row
    // in the goals (etcd's side is not measured in the smoke run).
    let batch = report
        .peers
        .runs
        .iter()
        .find(|r| r.system == "ringkv" && r.measurement.workload == Workload::BatchPut)
        .expect("no batch put run for the performance goals");
    assert_eq!(batch.measurement.concurrency, 64);
    assert_eq!(
        batch.measurement.errors, 0,
        "{:?}",
        batch.measurement.first_error
    );
    assert!(batch.measurement.keys >= 100 * batch.measurement.requests.max(1));
    assert!(document.contains("batch puts of 100 keys ≥ 5× etcd's Txn of 100 puts"));
    // Data safety through the crash and the partition: every acknowledged
    // write reads back.
    assert!(report.fault_notes.is_empty(), "{:?}", report.fault_notes);
    assert_eq!(report.faults.len(), 2);
    for run in &report.faults {
        println!(
            "checked {} acknowledged writes after {}: {} lost",
            run.acknowledged_writes, run.fault, run.lost_writes
        );
        assert!(run.acknowledged_writes > 0);
        assert_eq!(run.lost_writes, 0, "{}", run.fault);
    }
    // After the partition heals, every replica converges.
    assert!(
        report.consistency.notes.is_empty(),
        "{:?}",
        report.consistency.notes
    );
    for run in &report.consistency.convergence {
        assert_eq!(run.acknowledged_keys, run.keys, "{run:?}");
        assert!(run.converged_seconds > 0.0);
    }
    // Overlapping quorums (R=2, W=2 of N=3) read every acknowledged write.
    let overlapping = report
        .consistency
        .staleness
        .iter()
        .find(|c| c.read_quorum + c.write_quorum > 3)
        .unwrap();
    for point in &overlapping.points {
        assert!(point.trials > 0);
        assert_eq!(
            point.consistent, point.trials,
            "R=2 W=2 read a stale value: {point:?}"
        );
    }
    let placement = &report.scalability.placement;
    assert!(placement.iter().all(|row| row.max_over_mean < 1.1));
}
