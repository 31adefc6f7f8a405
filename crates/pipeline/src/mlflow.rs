//! A small client for MLflow's tracking REST API (`/api/2.0/mlflow/...`) and its artifact proxy
//! (`/api/2.0/mlflow-artifacts/artifacts/...`).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub step: i64,
}

pub struct Mlflow {
    pub base: String,
    agent: ureq::Agent,
    auth: Option<String>,
}

/// MLflow's per-request limits for runs/log-batch.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
const MAX_TAGS: usize = 100;

impl Mlflow {
    /// The server named by `MLFLOW_TRACKING_URI`, if it is an http(s) URI. Credentials come from
    /// `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD`.
    pub fn from_env() -> Result<Option<Self>> {
        let Ok(uri) = std::env::var("MLFLOW_TRACKING_URI") else {
            return Ok(None);
        };
        let uri = uri.trim().trim_end_matches('/').to_string();
        if uri.is_empty() {
            return Ok(None);
        }
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            eprintln!(
                "tracking: MLFLOW_TRACKING_URI={uri} is not a tracking server (http:// or https://); the runner logs over REST only, so this run is recorded under artifacts/runs/ alone"
            );
            return Ok(None);
        }
        Ok(Some(Self::new(&uri, Self::auth_from_env())))
    }

    /// The Authorization header from `MLFLOW_TRACKING_TOKEN` or
    /// `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD`.
    pub fn auth_from_env() -> Option<String> {
        if let Ok(token) = std::env::var("MLFLOW_TRACKING_TOKEN") {
            Some(format!("Bearer {token}"))
        } else if let Ok(user) = std::env::var("MLFLOW_TRACKING_USERNAME") {
            use base64::Engine;
            let pass = std::env::var("MLFLOW_TRACKING_PASSWORD").unwrap_or_default();
            let raw = format!("{user}:{pass}");
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            ))
        } else {
            None
        }
    }

    pub fn new(base: &str, auth: Option<String>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
            auth,
        }
    }

    fn check(&self, what: &str, resp: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = resp.status();
        let text = resp
            .into_body()
            .read_to_string()
            .with_context(|| format!("MLflow {what}: reading the answer"))?;
        if !status.is_success() {
            bail!("MLflow {what} at {}: HTTP {status}: {text}", self.base);
        }
        if text.trim().is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_str(&text).with_context(|| format!("MLflow {what}: not JSON: {text}"))
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let mut req = self.agent.post(&url);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let resp = req
            .send_json(body)
            .with_context(|| format!("MLflow: cannot reach {url}"))?;
        self.check(path, resp)
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<(u16, Value)> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let mut req = self.agent.get(&url);
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let resp = req
            .call()
            .with_context(|| format!("MLflow: cannot reach {url}"))?;
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string()?;
        let v = serde_json::from_str(&text).unwrap_or(json!({ "raw": text }));
        Ok((status, v))
    }

    /// The id of the experiment called `name`, created when missing.
    pub fn experiment_id(&self, name: &str) -> Result<String> {
        let (status, v) = self.get("experiments/get-by-name", &[("experiment_name", name)])?;
        if status == 200 {
            if let Some(id) = v["experiment"]["experiment_id"].as_str() {
                return Ok(id.to_string());
            }
        }
        if v["error_code"] != "RESOURCE_DOES_NOT_EXIST" && status != 404 {
            bail!(
                "MLflow experiments/get-by-name at {}: HTTP {status}: {v}",
                self.base
            );
        }
        let v = self.post("experiments/create", &json!({ "name": name }))?;
        v["experiment_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("MLflow experiments/create: no experiment_id in {v}"))
    }

    /// Create a run; returns (run id, artifact URI).
    pub fn create_run(
        &self,
        experiment_id: &str,
        tags: &[(String, String)],
    ) -> Result<(String, String)> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let run_name = tags
            .iter()
            .find(|t| t["key"] == "mlflow.runName")
            .map(|t| t["value"].clone())
            .unwrap_or(json!("rebalance"));
        let v = self.post(
            "runs/create",
            &json!({
                "experiment_id": experiment_id,
                "start_time": crate::util::now_ms() as u64,
                "run_name": run_name,
                "tags": tags,
            }),
        )?;
        let info = &v["run"]["info"];
        let id = info["run_id"]
            .as_str()
            .ok_or_else(|| anyhow!("MLflow runs/create: no run_id in {v}"))?;
        Ok((
            id.to_string(),
            info["artifact_uri"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ))
    }

    /// The artifact URI of an existing run (the one `mlflow run` started).
    pub fn artifact_uri(&self, run_id: &str) -> Result<String> {
        let (status, v) = self.get("runs/get", &[("run_id", run_id)])?;
        if status != 200 {
            bail!(
                "MLflow runs/get {run_id} at {}: HTTP {status}: {v}",
                self.base
            );
        }
        Ok(v["run"]["info"]["artifact_uri"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// runs/log-batch, split to MLflow's limits.
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<()> {
        let ts = crate::util::now_ms() as u64;
        for chunk in metrics.chunks(MAX_METRICS) {
            let ms: Vec<Value> = chunk
                .iter()
                .map(|m| json!({"key": m.key, "value": m.value, "timestamp": ts, "step": m.step}))
                .collect();
            self.post("runs/log-batch", &json!({"run_id": run_id, "metrics": ms}))?;
        }
        for chunk in params.chunks(MAX_PARAMS) {
            let ps: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            self.post("runs/log-batch", &json!({"run_id": run_id, "params": ps}))?;
        }
        for chunk in tags.chunks(MAX_TAGS) {
            let ts: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            self.post("runs/log-batch", &json!({"run_id": run_id, "tags": ts}))?;
        }
        Ok(())
    }

    pub fn set_terminated(&self, run_id: &str, status: &str) -> Result<()> {
        self.post(
            "runs/update",
            &json!({"run_id": run_id, "status": status, "end_time": crate::util::now_ms() as u64}),
        )?;
        Ok(())
    }

    /// Upload one file as an artifact at `rel`. The server takes it when it proxies artifacts
    /// (`mlflow-artifacts:` URIs); a local `file:` store on this machine gets a copy. Returns
    /// false when the store is one this client cannot write (s3:, gs:, …).
    pub fn log_artifact(&self, artifact_uri: &str, local: &Path, rel: &str) -> Result<bool> {
        if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            // mlflow-artifacts:/<path> or mlflow-artifacts://host:port/<path>
            let path = match rest.strip_prefix("//") {
                Some(hosted) => hosted.split_once('/').map(|(_, p)| p).unwrap_or(""),
                None => rest.trim_start_matches('/'),
            };
            let url = format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{}/{}",
                self.base,
                path.trim_end_matches('/'),
                rel
            );
            let bytes =
                std::fs::read(local).with_context(|| format!("reading {}", local.display()))?;
            let mut req = self.agent.put(&url);
            if let Some(a) = &self.auth {
                req = req.header("Authorization", a);
            }
            let resp = req
                .send(&bytes[..])
                .with_context(|| format!("MLflow: uploading {}", local.display()))?;
            self.check("artifact upload", resp)?;
            return Ok(true);
        }
        let local_store = artifact_uri
            .strip_prefix("file://")
            .or_else(|| artifact_uri.starts_with('/').then_some(artifact_uri));
        if let Some(dir) = local_store {
            let target = Path::new(dir).join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::copy(local, &target)
                .with_context(|| format!("copying {} to {}", local.display(), target.display()))?;
            return Ok(true);
        }
        Ok(false)
    }
}
