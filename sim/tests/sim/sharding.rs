//! A sweep split as a Kubernetes Indexed Job splits it (deploy/sim-job.yaml): each shard is a
//! separate crid-sim process that learns its shard from JOB_COMPLETION_INDEX and
//! JOB_COMPLETIONS and writes its summary; `crid-sim merge` combines the files into the
//! summary of the whole range, and refuses a set with a shard missing.

use std::path::Path;
use std::process::{Command, Output}; // determinism-ok: the test runs each shard as a process of its own.

use crid_sim::summary::Summary;

const SCENARIO: &str = "names";
const SEEDS: &str = "0..12";
const SHARDS: u64 = 3;

#[expect(clippy::disallowed_methods, reason = "the test runs the command line as a Job's pod would")]
fn crid_sim(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crid-sim"));
    command.args(args).env_remove("JOB_COMPLETION_INDEX").env_remove("JOB_COMPLETIONS");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run crid-sim")
}

#[expect(clippy::disallowed_methods, reason = "the summaries are files the shards wrote, read after they ended")]
fn read_summary(path: &Path) -> Summary {
    let text = std::fs::read_to_string(path).expect("summary written"); // determinism-ok: a finished shard's file.
    serde_json::from_str(&text).expect("summary parses")
}

#[test]
#[expect(clippy::disallowed_methods, reason = "the shards' summaries are real files in a temporary directory")]
fn indexed_job_shards_merge_into_the_whole_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for index in 0..SHARDS {
        let file = dir.path().join(format!("shard-{index}.json"));
        let path = file.to_str().unwrap();
        let env = [("JOB_COMPLETION_INDEX", index.to_string()), ("JOB_COMPLETIONS", SHARDS.to_string())];
        let output = crid_sim(&["run", "--scenario", SCENARIO, "--seeds", SEEDS, "--jobs", "1", "--json", path], &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "shard {index}: {}\n{stderr}", output.status);
        assert!(stderr.contains(&format!("shard {index}/{SHARDS} (from JOB_COMPLETION_INDEX")), "{stderr}");
        let summary = read_summary(&file);
        assert_eq!(summary.runs, 4, "shard {index} runs seeds {index}, {}, {}", index + 3, index + 6);
        assert_eq!(summary.range, Some((0, 12)));
        files.push(file);
    }

    let whole_file = dir.path().join("whole.json");
    let output =
        crid_sim(&["run", "--scenario", SCENARIO, "--seeds", SEEDS, "--json", whole_file.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let whole = read_summary(&whole_file);
    assert_eq!((whole.runs, whole.shard), (12, None));

    let paths: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let mut args = vec!["merge"];
    args.extend(&paths);
    let merged = crid_sim(&args, &[]);
    let stdout = String::from_utf8_lossy(&merged.stdout);
    assert!(merged.status.success(), "merge: {}\n{}", merged.status, String::from_utf8_lossy(&merged.stderr));
    assert!(stdout.contains("runs                12"), "{stdout}");
    assert!(stdout.contains(&format!("failures            {}", whole.failed_seeds.len())), "{stdout}");

    // A Job's results volume: the directory's *.json files, the whole sweep's among them.
    std::fs::remove_file(&whole_file).unwrap(); // determinism-ok: test set-up between finished runs.
    let merged = crid_sim(&["merge", dir.path().to_str().unwrap()], &[]);
    assert!(merged.status.success(), "merge of the directory: {}", String::from_utf8_lossy(&merged.stderr));
    assert!(String::from_utf8_lossy(&merged.stdout).contains("runs                12"));

    let merged = crid_sim(&["merge", paths[0], paths[2]], &[]);
    let stderr = String::from_utf8_lossy(&merged.stderr);
    assert_eq!(merged.status.code(), Some(2), "a lost shard is refused: {stderr}");
    assert!(stderr.contains("1 of 3 shards missing: 1"), "{stderr}");
}

#[test]
fn half_an_indexed_jobs_environment_is_refused() {
    let output = crid_sim(&["run", "--scenario", SCENARIO, "--seeds", SEEDS], &[("JOB_COMPLETION_INDEX", "1".into())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("JOB_COMPLETIONS is not"), "{stderr}");
}
