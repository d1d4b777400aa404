//! `sinter init` and `sinter model …`.

use crate::ctx::Ctx;
use crate::table;
use crate::workspace::{
    AliasChange, ModelDetail, ModelRef, ModelSummary, ModelVersion, NewVersion, Selector,
    Signature, Source, TensorSpec, Workspace,
};
use anyhow::Context;
use comfy_table::Cell;
use prost::Message;
use serde_json::json;
use sinter_compiler::onnx::proto::{
    data_type, tensor_shape_proto::dimension, type_proto, ModelProto, ValueInfoProto,
};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum ModelCmd {
    /// Register an ONNX file as the next version of a model (created on first use).
    Register {
        /// The ONNX file.
        file: PathBuf,
        /// Model name: letters, digits, '.', '_' and '-'.
        #[arg(long)]
        name: String,
        /// Version tag KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Description of this version (also of the model, if it has none yet).
        #[arg(long)]
        description: Option<String>,
    },
    /// List registered models.
    List,
    /// Show a model (versions, aliases and their history) or one version (NAME:V, NAME@ALIAS).
    Show {
        /// NAME, NAME:VERSION or NAME@ALIAS.
        model: String,
    },
    /// Set tags of a model (NAME) or of a version (NAME:V, NAME@ALIAS).
    Tag {
        /// NAME, NAME:VERSION or NAME@ALIAS.
        model: String,
        /// Tags to set.
        #[arg(value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Tag keys to remove (repeatable).
        #[arg(long, value_name = "KEY")]
        remove: Vec<String>,
    },
    /// Set the description of a model (NAME) or of a version (NAME:V, NAME@ALIAS).
    Describe {
        /// NAME, NAME:VERSION or NAME@ALIAS.
        model: String,
        /// The new description.
        description: String,
    },
    /// Point NAME@ALIAS at a version, or remove the alias with --remove.
    Alias {
        /// Model name.
        name: String,
        /// Alias (starts with a letter; `latest` is reserved).
        alias: String,
        /// Version to point at.
        #[arg(required_unless_present = "remove")]
        version: Option<u32>,
        /// Remove the alias instead.
        #[arg(long, conflicts_with = "version")]
        remove: bool,
    },
    /// Delete a version (NAME:V) or a whole model (NAME) with its bundles.
    Delete {
        /// NAME or NAME:VERSION.
        model: String,
        /// Delete even if aliases point at it (they are removed).
        #[arg(long)]
        force: bool,
    },
}

pub fn init(ctx: &Ctx) -> anyhow::Result<()> {
    let existed = ctx.dir.join(crate::workspace::DB_FILE).is_file();
    let ws = Workspace::init(&ctx.dir)?;
    let root = std::fs::canonicalize(ws.root()).unwrap_or_else(|_| ws.root().to_path_buf());
    if ctx.json {
        return ctx.print_json(&json!({
            "workspace": root,
            "created": !existed,
            "schema_version": ws.schema_version()?,
        }));
    }
    if existed {
        println!("workspace already initialised at {}", root.display());
    } else {
        println!("initialised workspace at {}", root.display());
    }
    Ok(())
}

pub fn main(cmd: ModelCmd, ctx: &Ctx) -> anyhow::Result<()> {
    let ws = ctx.open()?;
    match cmd {
        ModelCmd::Register {
            file,
            name,
            tags,
            description,
        } => register(&ws, ctx, &file, &name, &tags, description.as_deref()),
        ModelCmd::List => list(&ws, ctx),
        ModelCmd::Show { model } => show(&ws, ctx, &model),
        ModelCmd::Tag {
            model,
            tags,
            remove,
        } => tag(&ws, ctx, &model, &tags, &remove),
        ModelCmd::Alias {
            name,
            alias,
            version,
            remove,
        } => set_alias(&ws, ctx, &name, &alias, version, remove),
        ModelCmd::Delete { model, force } => delete(&ws, ctx, &model, force),
        ModelCmd::Describe { model, description } => describe(&ws, ctx, &model, &description),
    }
}

/// Parses `KEY=VALUE` arguments.
fn parse_tags(tags: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for t in tags {
        let (k, v) = t
            .split_once('=')
            .with_context(|| format!("tag '{t}' is not KEY=VALUE"))?;
        anyhow::ensure!(!k.is_empty(), "tag '{t}' has an empty key");
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Element type names as users know them from numpy.
fn dtype_name(code: i32) -> String {
    match code {
        data_type::FLOAT => "float32".into(),
        data_type::DOUBLE => "float64".into(),
        data_type::FLOAT16 => "float16".into(),
        other => data_type::name(other).to_ascii_lowercase(),
    }
}

/// Name, dims (`None` when symbolic or unknown) and dtype of a declared tensor, or `None` when
/// the declaration has no tensor type or shape.
fn declared(v: &ValueInfoProto) -> Option<TensorSpec> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let shape = t
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match d.value {
            Some(dimension::Value::DimValue(n)) if n > 0 => Some(n as u64),
            _ => None,
        })
        .collect();
    Some(TensorSpec {
        name: v.name.clone(),
        shape,
        dtype: dtype_name(t.elem_type),
    })
}

/// The inputs and outputs of an ONNX model. The model is imported in full, so a file the
/// compiler cannot read is refused at registration rather than at its first compile; declared
/// shapes keep their symbolic dims (as `None`), which the import binds to a batch size.
pub fn onnx_signature(bytes: &[u8]) -> anyhow::Result<Signature> {
    let graph = sinter_compiler::onnx::parse_model(bytes)
        .context("the compiler cannot import this model")?;
    let proto = ModelProto::decode(bytes).context("not an ONNX model")?;
    let g = proto.graph.unwrap_or_default();
    let initializers: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut dynamic_batch = false;
    let inputs = graph
        .inputs
        .iter()
        .map(|t| {
            let spec = g
                .input
                .iter()
                .filter(|v| !initializers.contains(v.name.as_str()))
                .find(|v| v.name == t.name)
                .and_then(declared);
            let spec = spec.unwrap_or_else(|| TensorSpec {
                name: t.name.clone(),
                shape: t.shape.iter().map(|d| Some(*d as u64)).collect(),
                dtype: "float32".into(),
            });
            dynamic_batch |= spec.shape.first() == Some(&None);
            spec
        })
        .collect();
    let outputs = graph
        .outputs
        .iter()
        .map(|t| {
            let from_import = || {
                let mut shape: Vec<Option<u64>> = t.shape.iter().map(|d| Some(*d as u64)).collect();
                if dynamic_batch {
                    if let Some(first) = shape.first_mut() {
                        *first = None;
                    }
                }
                TensorSpec {
                    name: t.name.clone(),
                    shape,
                    dtype: "float32".into(),
                }
            };
            g.output
                .iter()
                .find(|v| v.name == t.name)
                .and_then(declared)
                .unwrap_or_else(from_import)
        })
        .collect();
    Ok(Signature { inputs, outputs })
}

fn register(
    ws: &Workspace,
    ctx: &Ctx,
    file: &Path,
    name: &str,
    tags: &[String],
    description: Option<&str>,
) -> anyhow::Result<()> {
    crate::workspace::names::validate_model_name(name)?;
    let tags = parse_tags(tags)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let signature =
        onnx_signature(&bytes).with_context(|| format!("cannot register {}", file.display()))?;
    let mut new = NewVersion::onnx(Source::File(file), signature);
    new.tags = tags;
    new.description = description.unwrap_or_default().to_string();
    let v = ws.register(name, new)?;
    if let Some(d) = description {
        if ws.show_model(name)?.summary.description.is_empty() {
            ws.set_model_description(name, d)?;
        }
    }
    if ctx.json {
        return ctx.print_json(&v);
    }
    println!(
        "registered {}:{} ({}, {} bytes, sha256 {})",
        v.name,
        v.version,
        v.source_name,
        v.source_size,
        table::short(&v.source_hash)
    );
    print_signature(&v);
    Ok(())
}

fn dims(shape: &[Option<u64>]) -> String {
    let d: Vec<String> = shape
        .iter()
        .map(|d| d.map(|n| n.to_string()).unwrap_or_else(|| "?".into()))
        .collect();
    format!("[{}]", d.join(", "))
}

fn print_signature(v: &ModelVersion) {
    let mut t = table::new(&["", "tensor", "shape", "dtype"]);
    for (kind, list) in [
        ("input", &v.signature.inputs),
        ("output", &v.signature.outputs),
    ] {
        for s in list {
            t.add_row(vec![
                Cell::new(kind),
                Cell::new(&s.name),
                Cell::new(dims(&s.shape)),
                Cell::new(&s.dtype),
            ]);
        }
    }
    println!("{t}");
}

fn list(ws: &Workspace, ctx: &Ctx) -> anyhow::Result<()> {
    let models: Vec<ModelSummary> = ws.list_models()?;
    if ctx.json {
        return ctx.print_json(&models);
    }
    if models.is_empty() {
        println!("no registered models (sinter model register FILE --name NAME)");
        return Ok(());
    }
    let mut t = table::new(&[
        "name",
        "latest",
        "versions",
        "aliases",
        "tags",
        "updated",
        "description",
    ]);
    for m in &models {
        let aliases = m
            .aliases
            .iter()
            .map(|(a, v)| format!("@{a}→{v}"))
            .collect::<Vec<_>>()
            .join(", ");
        t.add_row(vec![
            Cell::new(&m.name),
            table::num(table::opt(m.latest_version)),
            table::num(m.version_count),
            Cell::new(aliases),
            Cell::new(table::pairs(&m.tags)),
            Cell::new(table::time(m.updated)),
            Cell::new(&m.description),
        ]);
    }
    println!("{t}");
    Ok(())
}

fn show(ws: &Workspace, ctx: &Ctx, model: &str) -> anyhow::Result<()> {
    let r: ModelRef = model.parse()?;
    if r.selector != Selector::Latest || model.contains('@') {
        return show_version(ws, ctx, &r);
    }
    let d: ModelDetail = ws.show_model(&r.name)?;
    if ctx.json {
        return ctx.print_json(&d);
    }
    let s = &d.summary;
    println!(
        "model {} ({} version(s), latest {})",
        s.name,
        s.version_count,
        table::opt(s.latest_version)
    );
    if !s.description.is_empty() {
        println!("  {}", s.description);
    }
    if !s.tags.is_empty() {
        println!("  tags: {}", table::pairs(&s.tags));
    }
    let mut t = table::new(&[
        "version",
        "aliases",
        "source",
        "sha256",
        "created",
        "tags",
        "description",
    ]);
    for v in &d.versions {
        t.add_row(vec![
            table::num(v.version),
            Cell::new(
                v.aliases
                    .iter()
                    .map(|a| format!("@{a}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Cell::new(&v.source_name),
            Cell::new(table::short(&v.source_hash)),
            Cell::new(table::time(v.created)),
            Cell::new(table::pairs(&v.tags)),
            Cell::new(&v.description),
        ]);
    }
    println!("{t}");
    if !d.alias_history.is_empty() {
        println!("alias history:");
        let mut t = table::new(&["when", "alias", "from", "to"]);
        for h in &d.alias_history {
            t.add_row(vec![
                Cell::new(table::time(h.at)),
                Cell::new(format!("@{}", h.alias)),
                table::num(table::opt(h.from)),
                table::num(table::opt(h.to)),
            ]);
        }
        println!("{t}");
    }
    Ok(())
}

fn show_version(ws: &Workspace, ctx: &Ctx, r: &ModelRef) -> anyhow::Result<()> {
    let v = ws.resolve(r)?;
    let bundles = ws.list_bundles(&v.reference())?;
    if ctx.json {
        let mut j = serde_json::to_value(&v)?;
        j["bundles"] = serde_json::to_value(&bundles)?;
        return ctx.print_json(&j);
    }
    println!(
        "{}:{}{}",
        v.name,
        v.version,
        if v.aliases.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                v.aliases
                    .iter()
                    .map(|a| format!("@{a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    println!(
        "  source {} ({} bytes, {}), sha256 {}",
        v.source_name, v.source_size, v.framework, v.source_hash
    );
    println!("  registered {}", table::time(v.created));
    if !v.description.is_empty() {
        println!("  {}", v.description);
    }
    if !v.tags.is_empty() {
        println!("  tags: {}", table::pairs(&v.tags));
    }
    print_signature(&v);
    if bundles.is_empty() {
        println!(
            "no bundles (sinter compile {}:{} --calib FILE)",
            v.name, v.version
        );
    } else {
        println!("bundles:");
        print_bundles(&bundles);
    }
    Ok(())
}

/// The table of a version's bundles.
pub fn print_bundles(bundles: &[crate::workspace::BundleRecord]) {
    let mut t = table::new(&["bundle", "hw", "compiler", "options", "run", "created"]);
    for b in bundles {
        t.add_row(vec![
            Cell::new(table::short(&b.bundle_hash)),
            Cell::new(&b.hw_config),
            Cell::new(&b.compiler_version),
            Cell::new(table::short(&b.options_hash)),
            Cell::new(table::opt(b.run_id.as_deref())),
            Cell::new(table::time(b.created)),
        ]);
    }
    println!("{t}");
}

fn tag(
    ws: &Workspace,
    ctx: &Ctx,
    model: &str,
    tags: &[String],
    remove: &[String],
) -> anyhow::Result<()> {
    let r: ModelRef = model.parse()?;
    anyhow::ensure!(
        !tags.is_empty() || !remove.is_empty(),
        "give tags as KEY=VALUE and/or --remove KEY"
    );
    let set = parse_tags(tags)?;
    let whole_model = r.selector == Selector::Latest && !model.contains('@');
    let mut missing = Vec::new();
    let now = if whole_model {
        for (k, v) in &set {
            ws.set_model_tag(&r.name, k, v)?;
        }
        for k in remove {
            if !ws.remove_model_tag(&r.name, k)? {
                missing.push(k.clone());
            }
        }
        ws.show_model(&r.name)?.summary.tags
    } else {
        let v = ws.resolve(&r)?;
        let fixed = v.reference();
        for (k, val) in &set {
            ws.set_version_tag(&fixed, k, val)?;
        }
        for k in remove {
            if !ws.remove_version_tag(&fixed, k)? {
                missing.push(k.clone());
            }
        }
        ws.resolve(&fixed)?.tags
    };
    for k in &missing {
        tracing::warn!("{model} had no tag '{k}'");
    }
    if ctx.json {
        return ctx.print_json(&json!({ "model": model, "tags": now, "not_found": missing }));
    }
    if now.is_empty() {
        println!("{model} has no tags");
    } else {
        println!("{model} tags: {}", table::pairs(&now));
    }
    Ok(())
}

fn set_alias(
    ws: &Workspace,
    ctx: &Ctx,
    name: &str,
    alias: &str,
    version: Option<u32>,
    remove: bool,
) -> anyhow::Result<()> {
    crate::workspace::names::validate_model_name(name)?;
    let (previous, now) = if remove {
        (Some(ws.remove_alias(name, alias)?), None)
    } else {
        let version = version.context("give the version the alias should point at")?;
        crate::workspace::names::validate_alias(alias)?;
        (ws.set_alias(name, alias, version)?, Some(version))
    };
    let history: Vec<AliasChange> = ws.alias_history(name, Some(alias))?;
    if ctx.json {
        return ctx.print_json(&json!({
            "model": name,
            "alias": alias,
            "version": now,
            "previous": previous,
            "history": history,
        }));
    }
    match (previous, now) {
        (_, None) => println!(
            "removed {name}@{alias} (was version {})",
            table::opt(previous)
        ),
        (Some(p), Some(v)) if p == v => println!("{name}@{alias} already points at version {v}"),
        (Some(p), Some(v)) => println!("{name}@{alias}: version {p} → {v}"),
        (None, Some(v)) => println!("{name}@{alias} → version {v}"),
    }
    let moves: Vec<String> = history
        .iter()
        .map(|h| {
            format!(
                "{} {}→{}",
                table::time(h.at),
                table::opt(h.from),
                table::opt(h.to)
            )
        })
        .collect();
    println!("history: {}", moves.join("; "));
    Ok(())
}

fn describe(ws: &Workspace, ctx: &Ctx, model: &str, description: &str) -> anyhow::Result<()> {
    let r: ModelRef = model.parse()?;
    let target = if r.selector == Selector::Latest && !model.contains('@') {
        ws.set_model_description(&r.name, description)?;
        r.name.clone()
    } else {
        let v = ws.resolve(&r)?;
        ws.set_version_description(&v.reference(), description)?;
        format!("{}:{}", v.name, v.version)
    };
    if ctx.json {
        return ctx.print_json(&json!({ "model": target, "description": description }));
    }
    println!("described {target}");
    Ok(())
}

fn delete(ws: &Workspace, ctx: &Ctx, model: &str, force: bool) -> anyhow::Result<()> {
    let r: ModelRef = model.parse()?;
    let what = match &r.selector {
        Selector::Version(v) => {
            ws.delete_version(&r.name, *v, force)?;
            format!("{}:{v}", r.name)
        }
        Selector::Latest if !model.contains('@') => {
            ws.delete_model(&r.name, force)?;
            r.name.clone()
        }
        _ => anyhow::bail!(
            "delete takes NAME (the whole model) or NAME:VERSION, not an alias; resolve it with `sinter model show {model}`"
        ),
    };
    if ctx.json {
        return ctx.print_json(&json!({ "deleted": what }));
    }
    println!("deleted {what}");
    Ok(())
}
