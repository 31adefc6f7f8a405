//! Tracking against a real `mlflow server` on loopback (installed in .venv by scripts/setup):
//! the runner's own runs over REST, and `mlflow run . -e … --env-manager local` through the
//! exported MLproject.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // mlflow server runs uvicorn workers in its own process group (process_group(0) below):
        // signal that group, and only it. (`kill -TERM -<pid>` through procps' kill was read as
        // pid -1 here: it signalled every process of the user.)
        let pgid = self.child.id() as libc::pid_t;
        assert!(pgid > 1, "no process group to stop");
        // SAFETY: kill(2) with a negative pid signals the process group |pid|; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mlflow_bin() -> std::path::PathBuf {
    let p = repo().join(".venv/bin/mlflow");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup (it installs mlflow into .venv)",
        p.display()
    );
    p
}

fn start_server(dir: &Path) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut cmd = Command::new(mlflow_bin());
    cmd.args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("db.sqlite").display()))
        .arg("--artifacts-destination")
        .arg(dir.join("store"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // Its own process group, so Drop can stop the workers too.
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let mut child = cmd.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(resp) = ureq::get(&format!("{url}/health")).call() {
            if resp.status() == 200 {
                break;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "mlflow server exited ({status}):\n{}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "mlflow server did not answer /health in 180 s:\n{}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    Server { child, url }
}

fn get(url: &str) -> Value {
    ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_body()
        .read_json()
        .unwrap()
}

fn post(url: &str, body: Value) -> Value {
    ureq::post(url)
        .send_json(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .into_body()
        .read_json()
        .unwrap()
}

/// The runs of an experiment, by name.
fn runs(server: &Server, experiment: &str) -> Vec<Value> {
    let exp = get(&format!(
        "{}/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}",
        server.url
    ));
    let id = exp["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let found = post(
        &format!("{}/api/2.0/mlflow/runs/search", server.url),
        json!({"experiment_ids": [id]}),
    );
    found["runs"].as_array().cloned().unwrap_or_default()
}

fn kv(list: &Value, key: &str) -> Option<Value> {
    list.as_array()?
        .iter()
        .find(|p| p["key"] == key)
        .map(|p| p["value"].clone())
}

#[test]
fn runs_are_logged_to_a_real_mlflow_server() {
    require_stage_binaries();
    let proj = project();
    let dir = proj.path();
    let server_dir = tempfile::tempdir().unwrap();
    let server = start_server(server_dir.path());
    let params: Vec<String> = tiny();
    let ingest_params: Vec<String> = params
        .iter()
        .filter(|p| {
            [
                "source",
                "test_per_class",
                "val_per_class",
                "max_per_class",
                "keep",
            ]
            .contains(&p.split('=').next().unwrap())
        })
        .cloned()
        .collect();

    // 1. The runner's own run: ingest, then a 20-step GAN.
    for (entry, ps) in [
        ("ingest", ingest_params.clone()),
        (
            "gan-train",
            vec!["steps=20".to_string(), "batch=16".to_string()],
        ),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir)
            .args(["-e", entry])
            .env("MLFLOW_TRACKING_URI", &server.url)
            .env("MLFLOW_EXPERIMENT_NAME", "rebalance-test")
            .env_remove("MLFLOW_RUN_ID");
        for p in &ps {
            cmd.args(["-P", p]);
        }
        let err = ok(&cmd.output().unwrap());
        assert!(err.contains("tracking: MLflow run"), "{err}");
    }
    let found = runs(&server, "rebalance-test");
    assert_eq!(found.len(), 2);
    let by_entry = |e: &str| {
        found
            .iter()
            .find(|r| kv(&r["data"]["tags"], "rebalance.entry") == Some(json!(e)))
            .unwrap_or_else(|| panic!("no run for {e}: {found:?}"))
            .clone()
    };
    let ingest = by_entry("ingest");
    assert_eq!(ingest["info"]["status"], "FINISHED");
    assert_eq!(
        kv(&ingest["data"]["params"], "ingest.test_per_class"),
        Some(json!("8"))
    );
    assert_eq!(
        kv(&ingest["data"]["params"], "ingest.keep"),
        Some(json!("c=6"))
    );
    assert_eq!(
        kv(&ingest["data"]["metrics"], "ingest.n_train"),
        Some(json!(78.0))
    );
    assert_eq!(
        kv(&ingest["data"]["tags"], "stage.ingest"),
        Some(json!("ran"))
    );
    let local_id = kv(&ingest["data"]["tags"], "rebalance.run_id").unwrap();
    assert!(dir
        .join("artifacts/runs")
        .join(local_id.as_str().unwrap())
        .join("run.json")
        .is_file());
    // Artifacts went through the server's proxy.
    let run_id = ingest["info"]["run_id"].as_str().unwrap();
    let listed = get(&format!(
        "{}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=run",
        server.url
    ));
    let files: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"run/run.json"), "{files:?}");
    // Loss curves with their steps.
    let gan = by_entry("gan-train");
    let gan_id = gan["info"]["run_id"].as_str().unwrap();
    let history = get(&format!(
        "{}/api/2.0/mlflow/metrics/get-history?run_id={gan_id}&metric_key=gan-train.g_loss",
        server.url
    ));
    let steps: Vec<i64> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert!(steps.contains(&20), "{steps:?}");
    assert_eq!(
        kv(&gan["data"]["params"], "gan-train.steps"),
        Some(json!("20"))
    );

    // 2. `mlflow run` through the exported MLproject logs into the run MLflow started.
    let o = Command::new(BIN)
        .current_dir(dir)
        .args(["export-mlproject", "--runner", BIN])
        .output()
        .unwrap();
    ok(&o);
    let mlproject = std::fs::read_to_string(dir.join("MLproject")).unwrap();
    assert!(
        mlproject.contains("gan_train_model: {type: string, default: \"cgan\"}"),
        "{mlproject}"
    );
    let mut cmd = Command::new(mlflow_bin());
    cmd.current_dir(dir)
        .args(["run", ".", "-e", "ingest", "--env-manager", "local"])
        .env("MLFLOW_TRACKING_URI", &server.url)
        .env("MLFLOW_EXPERIMENT_NAME", "rebalance-mlproject")
        .env(
            "PATH",
            format!(
                "{}:{}",
                repo().join(".venv/bin").display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .env_remove("MLFLOW_RUN_ID");
    for p in ingest_params
        .iter()
        .filter(|p| !p.starts_with("val_per_class="))
    {
        cmd.args(["-P", p]);
    }
    cmd.args(["-P", "val_per_class=7"]);
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "mlflow run failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let found = runs(&server, "rebalance-mlproject");
    assert_eq!(
        found.len(),
        1,
        "one run: the runner logged into MLflow's own"
    );
    let run = &found[0];
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(
        kv(&run["data"]["params"], "val_per_class"),
        Some(json!("7")),
        "MLflow's param"
    );
    assert_eq!(
        kv(&run["data"]["params"], "ingest.val_per_class"),
        Some(json!("7")),
        "the runner's param"
    );
    assert_eq!(
        kv(&run["data"]["metrics"], "ingest.n_val"),
        Some(json!(28.0))
    );
    let ds = json(&dir.join("artifacts/dataset/manifest.json"));
    assert_eq!(ds["counts"]["val"]["a"], 7);
}

#[test]
fn a_stopped_run_and_an_abandoned_one_end_killed_in_mlflow() {
    let proj = shell_project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    let server_dir = tempfile::tempdir().unwrap();
    let server = start_server(server_dir.path());
    let start = |secs: &str| {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir)
            .args(["-q", "--force", "-P", &format!("secs={secs}")])
            .env("MLFLOW_TRACKING_URI", &server.url)
            .env("MLFLOW_EXPERIMENT_NAME", "killed")
            .env_remove("MLFLOW_RUN_ID")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let stage_started = || {
        let _ = std::fs::remove_file(art.join("stage.pid"));
        until(60, "the stage to start", || {
            std::fs::read_to_string(art.join("stage.pid")).is_ok_and(|s| s.ends_with('\n'))
        });
    };
    let status_of = |run_id: &str| {
        get(&format!(
            "{}/api/2.0/mlflow/runs/get?run_id={run_id}",
            server.url
        ))["run"]["info"]["status"]
            .clone()
    };
    // SIGTERM: the runner ends its MLflow run as KILLED itself.
    let _ = std::fs::remove_file(art.join("stage.pid"));
    let a = start("30");
    stage_started();
    signal(&a, libc::SIGTERM);
    let a = a.wait_with_output().unwrap();
    assert_eq!(
        a.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    let rec = last_run(&art);
    assert_eq!(rec["status"], "KILLED");
    let a_id = rec["mlflow"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(status_of(&a_id), "KILLED");
    // SIGKILL: nothing can end the run then; the next run finds it RUNNING and ends it.
    let mut b = start("30");
    stage_started();
    let b_rec = holder(&art).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    b.kill().unwrap();
    b.wait().unwrap();
    let b_json = json(&art.join("runs").join(&b_rec).join("run.json"));
    let b_id = b_json["mlflow"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(status_of(&b_id), "RUNNING");
    let c = start("0").wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(c.status.success(), "{err}");
    assert!(
        err.contains(&format!("its MLflow run {b_id} is ended as KILLED")),
        "{err}"
    );
    assert_eq!(status_of(&b_id), "KILLED");
    assert_eq!(
        json(&art.join("runs").join(&b_rec).join("run.json"))["status"],
        "KILLED"
    );
    assert_eq!(last_run(&art)["status"], "FINISHED");
}

/// A project whose `classify` is a shell script writing a classify `metrics.json` whose
/// macro-F1 is 0.5 + add/1000 (one class, two seeds), so a sweep over `add` needs no training.
fn scripted_classify_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.toml"),
        r#"name = "scripted"
contract_version = "1.0"

[entry_points.classify]
help = "Writes metrics whose macro-F1 grows with add."
command = ["sh", "classify.sh", "{add}", "{artifacts}/classify"]
outs = ["{artifacts}/classify"]

[entry_points.classify.parameters]
add = { type = "int", default = 0, help = "Images added." }
artifacts = { type = "path", default = "artifacts", help = "Outputs." }
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("classify.sh"),
        r#"f=$(awk "BEGIN{print 0.5 + $1/1000}")
m="{\"accuracy\":$f,\"balanced_accuracy\":$f,\"macro_f1\":$f,\"loss\":1.0,\"n\":10,\"per_class\":[{\"class\":\"r\",\"precision\":$f,\"recall\":$f,\"f1\":$f,\"support\":10}],\"confusion\":[[10]]}"
run() { echo "{\"seed\":$1,\"best_epoch\":1,\"epochs_run\":1,\"train_s\":0.1,\"val\":$m,\"test\":$m}"; }
mkdir -p "$2"
echo "{\"classes\":[\"r\"],\"model\":\"lenet5\",\"train\":\"t\",\"train_counts\":{},\"rare_classes\":[\"r\"],\"seeds\":[1,2],\"test\":{\"mean\":{},\"std\":{}},\"runs\":[$(run 1),$(run 2)]}" > "$2/metrics.json"
"#,
    )
    .unwrap();
    dir
}

/// The `add` sweep's table: each value's mean macro-F1.
fn sweep_macro_f1(dir: &Path) -> Vec<f64> {
    json(&dir.join("artifacts/sweeps/add/sweep.json"))["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metrics"]["macro_f1"]["mean"].as_f64().unwrap())
        .collect()
}

#[test]
fn a_sweep_logs_each_value_as_a_child_run_of_its_own() {
    let proj = scripted_classify_project();
    let dir = proj.path();
    let server_dir = tempfile::tempdir().unwrap();
    let server = start_server(server_dir.path());
    let o = Command::new(BIN)
        .current_dir(dir)
        .args(["sweep", "-e", "classify", "-P", "add=0,250,500", "-q"])
        .env("MLFLOW_TRACKING_URI", &server.url)
        .env("MLFLOW_EXPERIMENT_NAME", "sweep")
        .env_remove("MLFLOW_RUN_ID")
        .output()
        .unwrap();
    ok(&o);
    let found = runs(&server, "sweep");
    assert_eq!(
        found.len(),
        4,
        "the sweep's run and one per value: {found:?}"
    );
    let parent = found
        .iter()
        .find(|r| kv(&r["data"]["tags"], "rebalance.entry") == Some(json!("sweep:classify")))
        .expect("the sweep's own run");
    let parent_id = parent["info"]["run_id"].clone();
    assert_eq!(parent["info"]["status"], "FINISHED");
    assert_eq!(
        kv(&parent["data"]["params"], "sweep.add"),
        Some(json!("0,250,500"))
    );
    // The parent holds the swept metric at steps 0, 1, 2 (its latest value is the last one).
    assert_eq!(
        kv(&parent["data"]["metrics"], "sweep.macro_f1"),
        Some(json!(1.0))
    );
    let mut children: Vec<(String, Value)> = found
        .iter()
        .filter(|r| kv(&r["data"]["tags"], "mlflow.parentRunId") == Some(parent_id.clone()))
        .map(|r| {
            (
                kv(&r["data"]["tags"], "rebalance.sweep.value")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                r.clone(),
            )
        })
        .collect();
    children.sort_by_key(|(v, _)| v.parse::<i64>().unwrap());
    let values: Vec<&str> = children.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(values, ["0", "250", "500"]);
    for (v, r) in &children {
        assert_eq!(r["info"]["status"], "FINISHED");
        assert_eq!(kv(&r["data"]["params"], "classify.add"), Some(json!(v)));
        assert_eq!(
            kv(&r["data"]["tags"], "mlflow.runName"),
            Some(json!(format!("add={v}")))
        );
        let f1 = 0.5 + v.parse::<f64>().unwrap() / 1000.0;
        let logged = kv(&r["data"]["metrics"], "classify.test.macro_f1");
        // The scripted metrics carry no test means; the table reads the per-seed runs.
        assert!(logged.is_none() || logged == Some(json!(f1)), "{logged:?}");
    }
    assert_eq!(sweep_macro_f1(dir), [0.5, 0.75, 1.0]);
}

#[test]
fn a_sweep_on_slurm_tags_its_jobs_and_logs_each_value_as_a_child_run() {
    let cluster = common::slurm::Cluster::start();
    let proj = scripted_classify_project();
    let dir = proj.path();
    let server_dir = tempfile::tempdir().unwrap();
    let server = start_server(server_dir.path());
    let o = cluster
        .pipeline(
            dir,
            &["sweep", "-e", "classify", "--executor", "slurm", "-q"],
            &["add=0,250,500".to_string()],
        )
        .env("MLFLOW_TRACKING_URI", &server.url)
        .env("MLFLOW_EXPERIMENT_NAME", "sweep-slurm")
        .env_remove("MLFLOW_RUN_ID")
        .output()
        .unwrap();
    let err = ok(&o);
    assert!(err.contains("submitted as Slurm array job"), "{err}");
    let found = runs(&server, "sweep-slurm");
    assert_eq!(
        found.len(),
        4,
        "the sweep's run and one per value: {found:?}"
    );
    let parent = found
        .iter()
        .find(|r| kv(&r["data"]["tags"], "rebalance.entry") == Some(json!("sweep:classify")))
        .expect("the sweep's own run");
    let parent_id = parent["info"]["run_id"].clone();
    assert_eq!(parent["info"]["status"], "FINISHED");
    let mut values = Vec::new();
    for r in found
        .iter()
        .filter(|r| kv(&r["data"]["tags"], "mlflow.parentRunId") == Some(parent_id.clone()))
    {
        let v = kv(&r["data"]["tags"], "rebalance.sweep.value").unwrap();
        let v = v.as_str().unwrap().to_string();
        assert_eq!(r["info"]["status"], "FINISHED", "{v}");
        assert_eq!(
            kv(&r["data"]["tags"], "mlflow.runName"),
            Some(json!(format!("add={v}")))
        );
        assert_eq!(kv(&r["data"]["tags"], "stage.classify"), Some(json!("ran")));
        if v == "0" {
            // The first value ran in the artifacts folder on Slurm: its job is tagged, and it
            // is the one run.json records.
            let rec = json(
                &dir.join("artifacts/runs")
                    .join(
                        kv(&r["data"]["tags"], "rebalance.run_id")
                            .unwrap()
                            .as_str()
                            .unwrap(),
                    )
                    .join("run.json"),
            );
            let id = rec["stages"][0]["jobs"][0]["id"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(kv(&r["data"]["tags"], "slurm.classify"), Some(json!(id)));
        }
        values.push(v);
    }
    values.sort_by_key(|v| v.parse::<i64>().unwrap());
    assert_eq!(values, ["0", "250", "500"]);
    assert_eq!(sweep_macro_f1(dir), [0.5, 0.75, 1.0]);
}
