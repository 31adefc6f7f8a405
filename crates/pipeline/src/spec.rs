//! `pipeline.toml`: named entry points with typed parameters, argv command templates, DVC-style
//! `deps`/`outs`, and chains (`steps`, optionally repeated for refinement rounds).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// Placeholders every command may use besides its parameters.
/// `round` is 1 outside refinement; `round_dir` is `{artifacts}` in round 1 and
/// `{artifacts}/rounds/<r>` in round r; `prev_dir` is the previous round's `round_dir`.
pub const BUILTINS: [&str; 3] = ["round", "round_dir", "prev_dir"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    #[serde(default)]
    pub contract_version: Option<String>,
    /// What each stage's Slurm job asks for unless its entry point says otherwise
    /// (`--executor slurm`).
    #[serde(default)]
    pub resources: Resources,
    pub entry_points: BTreeMap<String, Entry>,
    /// Parameter values that apply together when some parameters have given values.
    #[serde(default)]
    pub presets: BTreeMap<String, Preset>,
}

/// A set of parameter values for the parameters a user did not give, applied while every
/// `when` parameter has its `when` value (given or by default). The MNIST demo's caps are one:
/// they apply while `source` is the demo's folder, so a user's `-P source=DIR` gets the
/// data-driven defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    #[serde(default)]
    pub help: String,
    pub when: BTreeMap<String, toml::Value>,
    pub values: BTreeMap<String, toml::Value>,
}

/// A Slurm job's request (`--executor slurm`). Unset fields fall back to the manifest's
/// `[resources]`, then to the cluster's own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `--cpus-per-task`.
    pub cpus: Option<u32>,
    /// `--mem` (`4G`, `500M`).
    pub mem: Option<String>,
    /// `--gpus`; a stage whose command says `--device cuda` asks for 1 unless this is set.
    pub gpus: Option<u32>,
    /// `--time` (`02:00:00`, `1-00:00:00`).
    pub time: Option<String>,
    /// `--partition`; empty or unset: the cluster's default.
    pub partition: Option<String>,
}

impl Resources {
    pub const KEYS: [&'static str; 5] = ["cpus", "mem", "gpus", "time", "partition"];

    /// `self`, with every field `over` sets replaced.
    pub fn overlaid(&self, over: &Resources) -> Resources {
        Resources {
            cpus: over.cpus.or(self.cpus),
            mem: over.mem.clone().or_else(|| self.mem.clone()),
            gpus: over.gpus.or(self.gpus),
            time: over.time.clone().or_else(|| self.time.clone()),
            partition: over.partition.clone().or_else(|| self.partition.clone()),
        }
    }

    /// Set one field from text (`-P resources.cpus=2`).
    pub fn set(&mut self, key: &str, raw: &str) -> Result<()> {
        let int = |what: &str| -> Result<u32> {
            raw.trim()
                .parse::<u32>()
                .map_err(|_| anyhow!("resources.{what} must be a whole number, not `{raw}`"))
        };
        let text = || Some(raw.trim().to_string());
        match key {
            "cpus" => self.cpus = Some(int("cpus")?),
            "gpus" => self.gpus = Some(int("gpus")?),
            "mem" => self.mem = text(),
            "time" => self.time = text(),
            "partition" => self.partition = text(),
            _ => bail!(
                "unknown resource `{key}`; the resources are: {}",
                Self::KEYS.join(", ")
            ),
        }
        Ok(())
    }
}

/// A stage that `--executor slurm` fans out as a job array: one task per unit of an int
/// parameter, then a merge job once every task succeeded. The local executor runs the plain
/// command, which must give the same outputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArraySpec {
    /// The parameter that counts the tasks: an int (`seeds`: that many tasks) or a list
    /// (`per_class_gans`: one task per item). At 1 (or 0), the stage is one job.
    pub over: String,
    /// Appended to each task's command; `{task}` is the task's index, from 0.
    pub task: Vec<String>,
    /// Appended to the merge job's command.
    pub merge: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(default)]
    pub help: String,
    /// argv template: program, then arguments with `{param}` placeholders.
    pub command: Option<Vec<String>>,
    /// A chain: other entry points run in order.
    pub steps: Option<Vec<String>>,
    /// For a chain: the int parameter N; its steps run once per round 2..=N.
    pub repeat: Option<String>,
    #[serde(default)]
    pub deps: Vec<String>,
    /// Inputs hashed for caching when present, not required.
    #[serde(default)]
    pub optional_deps: Vec<String>,
    #[serde(default)]
    pub outs: Vec<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamSpec>,
    /// This stage's Slurm request, over the manifest's `[resources]`.
    #[serde(default)]
    pub resources: Resources,
    /// Fan the stage out as a Slurm job array.
    pub array: Option<ArraySpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Int,
    Float,
    Bool,
    String,
    Path,
    List,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::String => "string",
            ParamType::Path => "path",
            ParamType::List => "list",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub kind: ParamType,
    pub default: Option<toml::Value>,
    #[serde(default)]
    pub help: String,
    /// Allowed values (string parameters).
    #[serde(default)]
    pub choices: Vec<String>,
    /// Item type of a list (default string); a list renders comma-separated.
    pub items: Option<ParamType>,
}

/// A typed parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Value>),
}

impl Value {
    /// The text that replaces `{param}` in a command.
    pub fn render(&self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::Str(s) => s.clone(),
            Value::List(items) => items
                .iter()
                .map(Value::render)
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }
}

fn parse_scalar(kind: ParamType, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    match kind {
        ParamType::Int => raw
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| format!("`{raw}` is not an int")),
        ParamType::Float => match raw.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Value::Float(v)),
            _ => Err(format!("`{raw}` is not a finite float")),
        },
        ParamType::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("`{raw}` is not a bool (true/false)")),
        },
        ParamType::String | ParamType::Path => {
            if raw.is_empty() && kind == ParamType::Path {
                Err("an empty path".into())
            } else {
                Ok(Value::Str(raw.to_string()))
            }
        }
        ParamType::List => Err("lists of lists are not supported".into()),
    }
}

impl ParamSpec {
    fn item_kind(&self) -> ParamType {
        self.items.unwrap_or(ParamType::String)
    }

    /// Parse a `-P key=value` value (lists: comma-separated).
    pub fn parse(&self, raw: &str) -> Result<Value, String> {
        let v = if self.kind == ParamType::List {
            if raw.trim().is_empty() {
                Value::List(Vec::new())
            } else {
                Value::List(
                    raw.split(',')
                        .map(|s| parse_scalar(self.item_kind(), s))
                        .collect::<Result<_, _>>()?,
                )
            }
        } else {
            parse_scalar(self.kind, raw)?
        };
        self.check_choice(&v)?;
        Ok(v)
    }

    fn check_choice(&self, v: &Value) -> Result<(), String> {
        if self.choices.is_empty() {
            return Ok(());
        }
        let items: Vec<&Value> = match v {
            Value::List(items) => items.iter().collect(),
            v => vec![v],
        };
        for item in items {
            let s = item.render();
            if !self.choices.contains(&s) {
                return Err(format!("`{s}` is not one of {}", self.choices.join(", ")));
            }
        }
        Ok(())
    }

    /// The declared default, type-checked.
    pub fn default_value(&self) -> Result<Option<Value>, String> {
        match &self.default {
            None => Ok(None),
            Some(d) => self.value_of(d).map(Some),
        }
    }

    /// A value written in the manifest (a default, a preset's value), type-checked.
    pub fn value_of(&self, d: &toml::Value) -> Result<Value, String> {
        let scalar = |kind: ParamType, d: &toml::Value| -> Result<Value, String> {
            match (kind, d) {
                (ParamType::Int, toml::Value::Integer(i)) => Ok(Value::Int(*i)),
                (ParamType::Float, toml::Value::Float(f)) => Ok(Value::Float(*f)),
                (ParamType::Float, toml::Value::Integer(i)) => Ok(Value::Float(*i as f64)),
                (ParamType::Bool, toml::Value::Boolean(b)) => Ok(Value::Bool(*b)),
                (ParamType::String | ParamType::Path, toml::Value::String(s)) => {
                    Ok(Value::Str(s.clone()))
                }
                (kind, d) => Err(format!("default {d} is not of type {kind}")),
            }
        };
        let v = match (self.kind, d) {
            (ParamType::List, toml::Value::Array(items)) => Value::List(
                items
                    .iter()
                    .map(|i| scalar(self.item_kind(), i))
                    .collect::<Result<_, _>>()?,
            ),
            (ParamType::List, d) => return Err(format!("default {d} is not a list")),
            (kind, d) => scalar(kind, d)?,
        };
        self.check_choice(&v)?;
        Ok(v)
    }

    /// `int = 300`-style one-line description for listings.
    pub fn describe(&self) -> String {
        let default = match self.default_value() {
            Ok(Some(v)) => format!(" = {}", v.render()),
            _ => " (required)".to_string(),
        };
        let kind = match (self.kind, self.items) {
            (ParamType::List, Some(i)) => format!("list of {i}"),
            (k, _) => k.to_string(),
        };
        format!("{kind}{default}")
    }
}

/// `{name}` placeholders in a template.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                out.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

/// Replace `{name}` placeholders; every name must be in `values`.
pub fn render(template: &str, values: &BTreeMap<String, String>) -> Result<String> {
    let mut out = template.to_string();
    for name in placeholders(template) {
        let v = values
            .get(&name)
            .ok_or_else(|| anyhow!("no value for `{{{name}}}` in `{template}`"))?;
        out = out.replace(&format!("{{{name}}}"), v);
    }
    Ok(out)
}

impl Spec {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let spec: Spec = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn entry(&self, name: &str) -> Result<&Entry> {
        self.entry_points.get(name).ok_or_else(|| {
            anyhow!(
                "no entry point `{name}`; the entry points are: {}",
                self.entry_points
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    fn validate(&self) -> Result<()> {
        for (name, e) in &self.entry_points {
            self.validate_entry(name, e)?;
        }
        for name in self.entry_points.keys() {
            self.check_cycle(name, &mut Vec::new())?;
        }
        self.validate_presets()
    }

    /// One entry point: a command or steps, parameters with good defaults, templates that name
    /// its parameters, an array over one of them, steps that exist, `repeat` over an int.
    fn validate_entry(&self, name: &str, e: &Entry) -> Result<()> {
        match (&e.command, &e.steps) {
            (Some(_), Some(_)) => bail!("entry point `{name}` has both `command` and `steps`"),
            (None, None) => bail!("entry point `{name}` needs a `command` or `steps`"),
            (Some(cmd), None) if cmd.is_empty() => {
                bail!("entry point `{name}` has an empty command")
            }
            _ => {}
        }
        for (p, spec) in &e.parameters {
            spec.default_value()
                .map_err(|m| anyhow!("parameter {name}.{p}: {m}"))?;
            if spec.items.is_some() && spec.kind != ParamType::List {
                bail!("parameter {name}.{p}: `items` is only for lists");
            }
        }
        let templates = e
            .command
            .iter()
            .flatten()
            .chain(&e.deps)
            .chain(&e.optional_deps)
            .chain(&e.outs);
        for t in templates {
            for ph in placeholders(t) {
                if !e.parameters.contains_key(&ph) && !BUILTINS.contains(&ph.as_str()) {
                    bail!(
                        "entry point `{name}` uses `{{{ph}}}`, which is not one of its parameters ({}) nor a built-in ({})",
                        e.parameters.keys().cloned().collect::<Vec<_>>().join(", "),
                        BUILTINS.join(", ")
                    );
                }
            }
        }
        if let Some(a) = &e.array {
            validate_array(name, e, a)?;
        }
        if let Some(steps) = &e.steps {
            for s in steps {
                self.entry(s)
                    .with_context(|| format!("entry point `{name}` lists step `{s}`"))?;
            }
        }
        if let Some(r) = &e.repeat {
            if e.steps.is_none() {
                bail!("entry point `{name}`: `repeat` needs `steps`");
            }
            match e.parameters.get(r.as_str()) {
                Some(spec) if spec.kind == ParamType::Int => {}
                _ => bail!("entry point `{name}`: `repeat = \"{r}\"` must name one of its own int parameters"),
            }
        }
        Ok(())
    }

    /// Every preset names parameters some entry point has, with values of their types.
    fn validate_presets(&self) -> Result<()> {
        for (name, p) in &self.presets {
            for (key, v) in p.when.iter().chain(&p.values) {
                let decls: Vec<&ParamSpec> = self
                    .entry_points
                    .values()
                    .filter_map(|e| e.parameters.get(key))
                    .collect();
                if decls.is_empty() {
                    bail!("preset `{name}` names `{key}`, which no entry point has");
                }
                for d in decls {
                    d.value_of(v)
                        .map_err(|m| anyhow!("preset `{name}`, `{key}`: {m}"))?;
                }
            }
        }
        Ok(())
    }

    /// The presets that apply to `entry` with the given unqualified values: every `when`
    /// parameter is one of the entry's, at the `when` value.
    pub fn presets_for<'a>(
        &'a self,
        entry: &str,
        given: &BTreeMap<String, Value>,
    ) -> Result<Vec<(&'a str, &'a Preset)>> {
        let params = self.params_of(entry)?;
        let mut out = Vec::new();
        for (name, p) in &self.presets {
            let applies = p.when.iter().all(|(key, want)| {
                let Some(Param::Shared(spec)) = params.get(key) else {
                    return false;
                };
                let now = match given.get(key) {
                    Some(v) => Some(v.clone()),
                    None => spec.default_value().ok().flatten(),
                };
                now.is_some() && spec.value_of(want).ok() == now
            });
            if applies {
                out.push((name.as_str(), p));
            }
        }
        Ok(out)
    }

    fn check_cycle(&self, name: &str, path: &mut Vec<String>) -> Result<()> {
        if path.iter().any(|p| p == name) {
            path.push(name.to_string());
            bail!("entry points form a cycle: {}", path.join(" → "));
        }
        path.push(name.to_string());
        if let Some(steps) = &self.entry_points[name].steps {
            for s in steps {
                self.check_cycle(s, path)?;
            }
        }
        path.pop();
        Ok(())
    }

    /// The command entries a chain runs (itself for a command entry), each once.
    pub fn leaves(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_leaves(name, &mut out);
        out
    }

    fn collect_leaves(&self, name: &str, out: &mut Vec<String>) {
        let e = &self.entry_points[name];
        match &e.steps {
            None => {
                if !out.iter().any(|o| o == name) {
                    out.push(name.to_string())
                }
            }
            Some(steps) => {
                for s in steps {
                    self.collect_leaves(s, out);
                }
            }
        }
    }

    /// The parameters an entry point accepts: its own, and for a chain those of every step.
    /// A name that steps declare with different types or defaults is ambiguous: only its
    /// qualified forms (`step.name`) may be set.
    pub fn params_of(&self, name: &str) -> Result<BTreeMap<String, Param>> {
        let mut out: BTreeMap<String, Param> = BTreeMap::new();
        let mut owners: BTreeMap<String, Vec<(String, ParamSpec)>> = BTreeMap::new();
        let mut entries = vec![name.to_string()];
        self.collect_chains(name, &mut entries);
        entries.extend(self.leaves(name));
        for e in entries {
            for (p, spec) in &self.entry_points[&e].parameters {
                let list = owners.entry(p.clone()).or_default();
                if !list.iter().any(|(o, _)| o == &e) {
                    list.push((e.clone(), spec.clone()));
                }
            }
        }
        for (p, list) in owners {
            let (_, first) = &list[0];
            let same = list.iter().all(|(_, s)| {
                s.kind == first.kind && s.default == first.default && s.items == first.items
            });
            let param = if same {
                Param::Shared(first.clone())
            } else {
                Param::Ambiguous(list.iter().map(|(o, _)| o.clone()).collect())
            };
            out.insert(p, param);
        }
        Ok(out)
    }

    fn collect_chains(&self, name: &str, out: &mut Vec<String>) {
        if let Some(steps) = &self.entry_points[name].steps {
            for s in steps {
                if self.entry_points[s].steps.is_some() && !out.contains(s) {
                    out.push(s.clone());
                    self.collect_chains(s, out);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub enum Param {
    Shared(ParamSpec),
    /// Declared differently by these entries.
    Ambiguous(Vec<String>),
}

/// Overrides from `-P key=value`, checked against an entry point: unknown keys are refused with
/// the list of valid ones, values are parsed by type.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    /// Unqualified `name` → value, for every step that declares `name`.
    pub shared: BTreeMap<String, Value>,
    /// `entry.name` → value.
    pub qualified: BTreeMap<(String, String), Value>,
    /// The presets that applied, and the values each set (those not given).
    pub presets: Vec<(String, Vec<(String, Value)>)>,
}

impl Bindings {
    pub fn new(spec: &Spec, entry: &str, overrides: &[(String, String)]) -> Result<Self> {
        let params = spec.params_of(entry)?;
        let leaves = spec.leaves(entry);
        let mut b = Bindings::default();
        let valid = || -> String {
            let mut names: BTreeSet<String> = BTreeSet::new();
            for (p, kind) in &params {
                match kind {
                    Param::Shared(s) => {
                        names.insert(format!("{p} ({})", s.describe()));
                    }
                    Param::Ambiguous(owners) => {
                        for o in owners {
                            names.insert(format!("{o}.{p}"));
                        }
                    }
                }
            }
            names.into_iter().collect::<Vec<_>>().join(", ")
        };
        for (key, raw) in overrides {
            if let Some((owner, p)) = key.split_once('.') {
                let e = spec
                    .entry_points
                    .get(owner)
                    .filter(|_| leaves.iter().any(|l| l == owner) || owner == entry);
                let Some(pspec) = e.and_then(|e| e.parameters.get(p)) else {
                    bail!(
                        "unknown parameter `{key}` for entry point `{entry}`; valid parameters: {}",
                        valid()
                    );
                };
                let v = pspec
                    .parse(raw)
                    .map_err(|m| anyhow!("parameter `{key}`: {m}"))?;
                b.qualified.insert((owner.to_string(), p.to_string()), v);
                continue;
            }
            match params.get(key.as_str()) {
                None => bail!(
                    "unknown parameter `{key}` for entry point `{entry}`; valid parameters: {}",
                    valid()
                ),
                Some(Param::Ambiguous(owners)) => bail!(
                    "parameter `{key}` means different things in {}; set one of: {}",
                    owners.join(", "),
                    owners
                        .iter()
                        .map(|o| format!("{o}.{key}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some(Param::Shared(pspec)) => {
                    let v = pspec
                        .parse(raw)
                        .map_err(|m| anyhow!("parameter `{key}` ({}): {m}", pspec.kind))?;
                    b.shared.insert(key.clone(), v);
                }
            }
        }
        b.apply_presets(spec, entry, &params)?;
        Ok(b)
    }

    /// Fill the parameters nobody gave from the presets that apply.
    fn apply_presets(
        &mut self,
        spec: &Spec,
        entry: &str,
        params: &BTreeMap<String, Param>,
    ) -> Result<()> {
        for (name, p) in spec.presets_for(entry, &self.shared)? {
            let mut set = Vec::new();
            for (key, raw) in &p.values {
                let Some(Param::Shared(pspec)) = params.get(key) else {
                    continue;
                };
                let given =
                    self.shared.contains_key(key) || self.qualified.keys().any(|(_, k)| k == key);
                if given {
                    continue;
                }
                let v = pspec
                    .value_of(raw)
                    .map_err(|m| anyhow!("preset `{name}`, `{key}`: {m}"))?;
                self.shared.insert(key.clone(), v.clone());
                set.push((key.clone(), v));
            }
            self.presets.push((name.to_string(), set));
        }
        Ok(())
    }

    /// "preset mnist-demo (source = data/mnist): keep=…, …" for each preset that applied.
    pub fn describe_presets(&self, spec: &Spec) -> Vec<String> {
        self.presets
            .iter()
            .map(|(name, set)| {
                let when: Vec<String> = spec.presets[name]
                    .when
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{k} = {}",
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string())
                        )
                    })
                    .collect();
                let vals: Vec<String> = set
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.render()))
                    .collect();
                format!(
                    "preset {name} ({}): {}",
                    when.join(", "),
                    if vals.is_empty() {
                        "every value given".to_string()
                    } else {
                        vals.join(" ")
                    }
                )
            })
            .collect()
    }

    /// The values of `entry`'s own parameters: default, then unqualified, then qualified.
    pub fn values_for(&self, spec: &Spec, entry: &str) -> Result<BTreeMap<String, Value>> {
        let e = spec.entry(entry)?;
        let mut out = BTreeMap::new();
        for (p, pspec) in &e.parameters {
            let v = self
                .qualified
                .get(&(entry.to_string(), p.clone()))
                .or_else(|| self.shared.get(p))
                .cloned()
                .or(pspec
                    .default_value()
                    .map_err(|m| anyhow!("{entry}.{p}: {m}"))?);
            match v {
                Some(v) => {
                    out.insert(p.clone(), v);
                }
                None => bail!("parameter {entry}.{p} has no default; give it with -P {p}=…"),
            }
        }
        Ok(out)
    }
}

/// Parse `key=value`.
pub fn parse_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

/// An entry point's `array`: over an int or list parameter, templates naming `{task}` or its
/// parameters.
fn validate_array(name: &str, e: &Entry, a: &ArraySpec) -> Result<()> {
    match e.parameters.get(&a.over) {
        Some(p) if matches!(p.kind, ParamType::Int | ParamType::List) => {}
        _ => bail!(
            "entry point `{name}`: array.over = `{}` must name one of its int or list parameters",
            a.over
        ),
    }
    for t in a.task.iter().chain(&a.merge) {
        for ph in placeholders(t) {
            if ph != "task" && !e.parameters.contains_key(&ph) {
                bail!(
                    "entry point `{name}`: array uses `{{{ph}}}`, which is neither `{{task}}` nor one of its parameters"
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
name = "t"
[entry_points.a]
command = ["prog", "--classes", "{classes}", "--w", "{w}", "--flag", "{flag}", "--out", "{round_dir}/a"]
[entry_points.a.parameters]
classes = { type = "list", items = "int", default = [1, 2] }
w = { type = "float", default = 1 }
flag = { type = "bool", default = false }
[entry_points.b]
command = ["prog", "{w}"]
[entry_points.b.parameters]
w = { type = "int", default = 3 }
[entry_points.chain]
steps = ["a", "b"]
"#;

    #[test]
    fn lists_floats_and_bools_parse_and_render() {
        let spec = Spec::parse(SPEC).unwrap();
        let p = &spec.entry_points["a"].parameters;
        assert_eq!(p["classes"].parse("3, 4,5").unwrap().render(), "3,4,5");
        assert!(p["classes"]
            .parse("3,x")
            .unwrap_err()
            .contains("`x` is not an int"));
        assert_eq!(p["classes"].parse("").unwrap(), Value::List(vec![]));
        assert_eq!(p["w"].default_value().unwrap(), Some(Value::Float(1.0)));
        assert_eq!(p["w"].parse("0.25").unwrap().render(), "0.25");
        assert_eq!(p["flag"].parse("yes").unwrap(), Value::Bool(true));
        assert!(p["flag"].parse("maybe").is_err());
        assert_eq!(p["classes"].describe(), "list of int = 1,2");
    }

    #[test]
    fn bad_manifests_are_refused_with_the_reason() {
        let bad = |text: &str| Spec::parse(text).unwrap_err().to_string();
        assert!(bad("name = \"t\"\n[entry_points.a]\nhelp = \"x\"\n")
            .contains("needs a `command` or `steps`"));
        assert!(bad("name = \"t\"\n[entry_points.a]\nsteps = [\"a\"]\n").contains("cycle: a → a"));
        assert!(
            bad("name = \"t\"\n[entry_points.a]\nsteps = [\"zz\"]\n").contains("lists step `zz`")
        );
        assert!(bad(
            "name = \"t\"\n[entry_points.a]\ncommand = [\"p\"]\n[entry_points.a.parameters]\nn = { type = \"int\", default = \"3\" }\n"
        )
        .contains("parameter a.n: default \"3\" is not of type int"));
        assert!(bad(
            "name = \"t\"\n[entry_points.a]\ncommand = [\"p\"]\n[entry_points.a.parameters]\nn = { type = \"integer\" }\n"
        )
        .contains("unknown variant `integer`"));
        assert!(
            bad("name = \"t\"\n[entry_points.a]\ncommand = [\"p\"]\nout = [\"x\"]\n")
                .contains("unknown field `out`")
        );
    }
}
