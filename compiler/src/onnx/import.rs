//! ONNX model → [`Graph`].
//!
//! Initializers and `Constant` nodes become constants. Every node whose inputs are all constant is
//! evaluated at import (constant folding), which removes the shape arithmetic real exporters emit
//! (`Shape → Gather → Unsqueeze → Concat → Reshape`, `ConstantOfShape`, ...). What remains are
//! runtime nodes on f32 tensors with concrete shapes.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Zip};
use prost::Message;

use super::proto::{
    attribute_type, data_type, tensor_shape_proto::dimension, type_proto, AttributeProto,
    ModelProto, NodeProto, TensorProto, ValueInfoProto, DATA_LOCATION_EXTERNAL,
};
use crate::error::{CompileError, Result};
use crate::ir::{BinaryOp, Graph, Node, Op, TensorInfo};
use crate::{interp, shape};

mod cnn;
mod tensor;

/// Oldest supported default-domain opset.
pub const MIN_OPSET: i64 = 7;
/// Newest supported default-domain opset.
pub const MAX_OPSET: i64 = 21;

/// Largest constant the importer materialises (elements; VGG's first fully-connected weight has
/// 103M).
const MAX_CONST_ELEMENTS: usize = 1 << 27;

/// Largest runtime tensor the importer accepts (elements, at the import batch size).
const MAX_TENSOR_ELEMENTS: usize = 1 << 31;

/// Options of the importer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// Value bound to dynamic (symbolic, `0` or `-1`) leading dims of graph inputs.
    pub batch: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { batch: 1 }
    }
}

/// Reads and imports an ONNX model file with default options.
pub fn load_model(path: impl AsRef<Path>) -> Result<Graph> {
    load_model_with(path, &ImportOptions::default())
}

/// Reads and imports an ONNX model file.
pub fn load_model_with(path: impl AsRef<Path>, options: &ImportOptions) -> Result<Graph> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| CompileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_model_with(&bytes, options)
}

/// Imports a serialized ONNX `ModelProto` with default options.
pub fn parse_model(bytes: &[u8]) -> Result<Graph> {
    parse_model_with(bytes, &ImportOptions::default())
}

/// Imports a serialized ONNX `ModelProto`.
pub fn parse_model_with(bytes: &[u8], options: &ImportOptions) -> Result<Graph> {
    let model = ModelProto::decode(bytes)?;
    import_model(&model, options)
}

/// Imports a decoded ONNX model.
pub fn import_model(model: &ModelProto, options: &ImportOptions) -> Result<Graph> {
    if options.batch == 0 {
        return Err(CompileError::InvalidModel(
            "batch must be at least 1".into(),
        ));
    }
    let opset = default_opset(model)?;
    let proto = model
        .graph
        .as_ref()
        .ok_or_else(|| CompileError::InvalidModel("model has no graph".into()))?;
    if !proto.sparse_initializer.is_empty() {
        return Err(CompileError::InvalidModel(
            "sparse initializers are not supported".into(),
        ));
    }

    let mut imp = Importer {
        opset,
        consts: HashMap::new(),
        graph: Graph {
            name: proto.name.clone(),
            ..Graph::default()
        },
        used: HashSet::new(),
        node_names: HashSet::new(),
    };
    for node in &proto.node {
        imp.used
            .extend(node.input.iter().filter(|s| !s.is_empty()).cloned());
    }
    imp.used.extend(proto.output.iter().map(|o| o.name.clone()));

    for t in &proto.initializer {
        if t.name.is_empty() {
            return Err(CompileError::InvalidModel(
                "initializer without a name".into(),
            ));
        }
        let c = tensor_from_proto(t)?;
        if imp.consts.insert(t.name.clone(), c).is_some() {
            return Err(CompileError::tensor(&t.name, "initializer defined twice"));
        }
    }
    for input in &proto.input {
        if imp.consts.contains_key(&input.name) {
            continue;
        }
        let shape = bind_input_shape(input, options.batch)?;
        if imp.is_defined(&input.name) {
            return Err(CompileError::tensor(
                &input.name,
                "graph input declared twice",
            ));
        }
        imp.graph.shapes.insert(input.name.clone(), shape.clone());
        imp.graph.inputs.push(TensorInfo::new(&input.name, shape));
    }
    for (idx, node) in proto.node.iter().enumerate() {
        imp.import_node(idx, node)?;
    }
    for output in &proto.output {
        imp.add_output(output)?;
    }

    let mut graph = imp.graph;
    let used: HashSet<&str> = graph
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().map(String::as_str))
        .collect();
    let unused: Vec<String> = graph
        .constants
        .keys()
        .filter(|k| !used.contains(k.as_str()))
        .cloned()
        .collect();
    for k in unused {
        graph.constants.remove(&k);
    }
    graph.validate()?;
    tracing::debug!(
        nodes = graph.nodes.len(),
        constants = graph.constants.len(),
        opset,
        "imported ONNX graph '{}'",
        graph.name
    );
    Ok(graph)
}

fn default_opset(model: &ModelProto) -> Result<i64> {
    let version = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| {
            CompileError::InvalidModel("no opset_import for the default ONNX domain".into())
        })?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&version) {
        return Err(CompileError::UnsupportedOpset {
            version,
            min: MIN_OPSET,
            max: MAX_OPSET,
        });
    }
    Ok(version)
}

fn bind_input_shape(input: &ValueInfoProto, batch: usize) -> Result<Vec<usize>> {
    let err = |m: String| CompileError::tensor(&input.name, m);
    let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        None => return Err(err("graph input is not a tensor".into())),
    };
    if tensor.elem_type != data_type::FLOAT {
        return Err(err(format!(
            "graph input has element type {}, only FLOAT inputs are supported",
            data_type::name(tensor.elem_type)
        )));
    }
    let dims = tensor
        .shape
        .as_ref()
        .ok_or_else(|| err("graph input has no shape (unknown rank)".into()))?;
    dims.dim
        .iter()
        .enumerate()
        .map(|(i, d)| match (&d.value, i) {
            (Some(dimension::Value::DimValue(v)), _) if *v > 0 => Ok(*v as usize),
            (_, 0) => Ok(batch),
            (Some(dimension::Value::DimParam(p)), _) => Err(err(format!(
                "symbolic dim '{p}' at position {i}: only the leading (batch) dim may be dynamic"
            ))),
            (v, _) => Err(err(format!(
                "dynamic dim {v:?} at position {i}: only the leading (batch) dim may be dynamic"
            ))),
        })
        .collect()
}

/// A constant known at import: weights (f32) or shape arithmetic (i64).
#[derive(Clone, Debug, PartialEq)]
enum Const {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

impl Const {
    fn shape(&self) -> &[usize] {
        match self {
            Const::F32(a) => a.shape(),
            Const::I64(a) => a.shape(),
        }
    }

    fn len(&self) -> usize {
        self.shape().iter().product()
    }

    fn to_f32(&self) -> ArrayD<f32> {
        match self {
            Const::F32(a) => a.clone(),
            Const::I64(a) => a.mapv(|v| v as f32),
        }
    }

    fn to_i64(&self) -> ArrayD<i64> {
        match self {
            Const::F32(a) => a.mapv(|v| v as i64),
            Const::I64(a) => a.clone(),
        }
    }

    fn ints(&self) -> Vec<i64> {
        self.to_i64().iter().copied().collect()
    }

    fn reshape(&self, shape: &[usize]) -> std::result::Result<Const, String> {
        fn go<T: Clone>(a: &ArrayD<T>, s: &[usize]) -> std::result::Result<ArrayD<T>, String> {
            a.to_shape(IxDyn(s))
                .map(|c| c.into_owned())
                .map_err(|e| e.to_string())
        }
        Ok(match self {
            Const::F32(a) => Const::F32(go(a, shape)?),
            Const::I64(a) => Const::I64(go(a, shape)?),
        })
    }
}

/// Converts an ONNX tensor to an f32 array (integer tensors are converted).
pub fn tensor_to_f32(t: &TensorProto) -> Result<ArrayD<f32>> {
    Ok(tensor_from_proto(t)?.to_f32())
}

fn tensor_from_proto(t: &TensorProto) -> Result<Const> {
    let err = |m: String| CompileError::tensor(&t.name, m);
    if t.data_location == DATA_LOCATION_EXTERNAL || !t.external_data.is_empty() {
        return Err(err(
            "external data is not supported (save the model with its weights embedded)".into(),
        ));
    }
    if t.segment.is_some() {
        return Err(err("segmented tensors are not supported".into()));
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative dim in {:?}", t.dims))))
        .collect::<Result<Vec<usize>>>()?;
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_CONST_ELEMENTS)
        .ok_or_else(|| err(format!("dims {:?} are too large", t.dims)))?;
    let raw = t.raw_data.as_slice();
    let has_raw = !raw.is_empty();
    let r = |m: String| err(m);

    enum Data {
        F32(Vec<f32>),
        I64(Vec<i64>),
    }
    let c = match t.data_type {
        data_type::FLOAT => Data::F32(if has_raw {
            decode_raw(raw, f32::from_le_bytes).map_err(r)?
        } else {
            t.float_data.clone()
        }),
        data_type::DOUBLE => Data::F32(if has_raw {
            decode_raw(raw, |b: [u8; 8]| f64::from_le_bytes(b) as f32).map_err(r)?
        } else {
            t.double_data.iter().map(|&v| v as f32).collect()
        }),
        data_type::FLOAT16 | data_type::BFLOAT16 => {
            let conv = if t.data_type == data_type::FLOAT16 {
                f16_to_f32
            } else {
                bf16_to_f32
            };
            Data::F32(if has_raw {
                decode_raw(raw, |b: [u8; 2]| conv(u16::from_le_bytes(b))).map_err(r)?
            } else {
                t.int32_data.iter().map(|&v| conv(v as u16)).collect()
            })
        }
        data_type::INT64 => Data::I64(if has_raw {
            decode_raw(raw, i64::from_le_bytes).map_err(r)?
        } else {
            t.int64_data.clone()
        }),
        dt @ (data_type::INT32
        | data_type::INT16
        | data_type::INT8
        | data_type::UINT16
        | data_type::UINT8
        | data_type::BOOL) => Data::I64(if has_raw {
            match dt {
                data_type::INT32 => decode_raw(raw, |b: [u8; 4]| i64::from(i32::from_le_bytes(b))),
                data_type::INT16 => decode_raw(raw, |b: [u8; 2]| i64::from(i16::from_le_bytes(b))),
                data_type::UINT16 => decode_raw(raw, |b: [u8; 2]| i64::from(u16::from_le_bytes(b))),
                data_type::INT8 => decode_raw(raw, |b: [u8; 1]| i64::from(b[0] as i8)),
                _ => decode_raw(raw, |b: [u8; 1]| i64::from(b[0])),
            }
            .map_err(r)?
        } else {
            t.int32_data.iter().map(|&v| i64::from(v)).collect()
        }),
        dt @ (data_type::UINT32 | data_type::UINT64) => Data::I64(if has_raw {
            if dt == data_type::UINT32 {
                decode_raw(raw, |b: [u8; 4]| i64::from(u32::from_le_bytes(b)))
            } else {
                decode_raw(raw, |b: [u8; 8]| u64::from_le_bytes(b) as i64)
            }
            .map_err(r)?
        } else {
            t.uint64_data.iter().map(|&v| v as i64).collect()
        }),
        other => {
            return Err(err(format!(
                "data type {} ({other}) is not supported",
                data_type::name(other)
            )))
        }
    };
    let found = match &c {
        Data::F32(v) => v.len(),
        Data::I64(v) => v.len(),
    };
    if found != numel {
        return Err(err(format!(
            "has {found} values but dims {:?} need {numel}",
            t.dims
        )));
    }
    let shape = IxDyn(&shape);
    match c {
        Data::F32(v) => ArrayD::from_shape_vec(shape, v).map(Const::F32),
        Data::I64(v) => ArrayD::from_shape_vec(shape, v).map(Const::I64),
    }
    .map_err(|e| err(e.to_string()))
}

/// Splits little-endian raw bytes into values of `N` bytes.
fn decode_raw<T, const N: usize>(
    raw: &[u8],
    f: impl Fn([u8; N]) -> T,
) -> std::result::Result<Vec<T>, String> {
    if !raw.len().is_multiple_of(N) {
        return Err(format!(
            "raw_data has {} bytes, not a multiple of the element size {N}",
            raw.len()
        ));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect())
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    match exp {
        0 => sign * frac as f32 * 2f32.powi(-24),
        31 if frac == 0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => f32::from_bits((u32::from(h & 0x8000) << 16) | ((exp + 112) << 23) | (frac << 13)),
    }
}

fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Rounds to the nearest IEEE half-precision value (ties to even), as a cast to FLOAT16 does.
fn round_to_f16(x: f32) -> f32 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let a = x.abs();
    if a >= 65520.0 {
        // Past the largest half (65504) plus half an ulp: overflow.
        return x.signum() * f32::INFINITY;
    }
    // Spacing of halfs around `a`: 2^(e - 10) for normals, 2^-24 for subnormals.
    let e = a.log2().floor().max(-14.0);
    let ulp = (e - 10.0).exp2();
    let q = a / ulp;
    let r = q.round();
    // Ties to even.
    let r = if (q - q.trunc() - 0.5).abs() == 0.0 && r % 2.0 != 0.0 {
        r - 1.0
    } else {
        r
    };
    x.signum() * r * ulp
}

/// Rounds to the nearest bfloat16 value (ties to even).
fn round_to_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000;
    f32::from_bits(rounded)
}

struct Importer {
    opset: i64,
    consts: HashMap<String, Const>,
    graph: Graph,
    /// Names read by some node or listed as graph outputs.
    used: HashSet<String>,
    node_names: HashSet<String>,
}

/// A node being imported, with its final (unique) name.
struct Ctx<'a> {
    name: String,
    node: &'a NodeProto,
    opset: i64,
}

impl Ctx<'_> {
    fn op_type(&self) -> &str {
        &self.node.op_type
    }

    fn err(&self, msg: impl Into<String>) -> CompileError {
        CompileError::node(&self.name, self.op_type(), msg)
    }

    fn shape_err(&self, msg: impl Into<String>) -> CompileError {
        CompileError::shape(&self.name, self.op_type(), msg)
    }

    /// Input `i`, `None` when absent or empty (an omitted optional input).
    fn input(&self, i: usize) -> Option<&str> {
        self.node
            .input
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn req_input(&self, i: usize) -> Result<&str> {
        self.input(i)
            .ok_or_else(|| self.err(format!("missing required input #{i}")))
    }

    fn output(&self) -> Result<&str> {
        self.node
            .output
            .first()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.err("has no output"))
    }

    fn attr(&self, name: &str, expected: i32) -> Result<Option<&AttributeProto>> {
        match self.node.attribute.iter().find(|a| a.name == name) {
            Some(a) if !a.ref_attr_name.is_empty() => {
                Err(self.err(format!("attribute '{name}' refers to a function attribute")))
            }
            Some(a) if a.r#type != attribute_type::UNDEFINED && a.r#type != expected => Err(self
                .err(format!(
                    "attribute '{name}' has type {}, expected {expected}",
                    a.r#type
                ))),
            other => Ok(other),
        }
    }

    fn attr_i(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self
            .attr(name, attribute_type::INT)?
            .map_or(default, |a| a.i))
    }

    fn attr_f(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self
            .attr(name, attribute_type::FLOAT)?
            .map_or(default, |a| a.f))
    }

    fn attr_s(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .attr(name, attribute_type::STRING)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self
            .attr(name, attribute_type::INTS)?
            .map(|a| a.ints.clone()))
    }
}

impl Importer {
    fn is_defined(&self, name: &str) -> bool {
        self.consts.contains_key(name) || self.graph.shapes.contains_key(name)
    }

    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.consts
            .get(name)
            .map(|c| c.shape().to_vec())
            .or_else(|| self.graph.shapes.get(name).cloned())
    }

    /// Shape of a defined tensor, or an error naming it.
    fn dims_of(&self, ctx: &Ctx, name: &str) -> Result<Vec<usize>> {
        self.shape_of(name)
            .ok_or_else(|| ctx.err(format!("input '{name}' is not defined")))
    }

    fn unique_name(&mut self, idx: usize, node: &NodeProto) -> String {
        let base = if node.name.is_empty() {
            format!("{}_{idx}", node.op_type)
        } else {
            node.name.clone()
        };
        let mut name = base.clone();
        let mut n = 1;
        while self.node_names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.node_names.insert(name.clone());
        name
    }

    fn set_const(&mut self, ctx: &Ctx, value: Const) -> Result<()> {
        let out = ctx.output()?.to_string();
        self.set_const_as(ctx, out, value)
    }

    /// Defines tensor `out` of the node being imported as a constant.
    fn set_const_as(&mut self, ctx: &Ctx, out: String, value: Const) -> Result<()> {
        if value.len() > MAX_CONST_ELEMENTS {
            return Err(ctx.err(format!(
                "constant of shape {:?} is too large",
                value.shape()
            )));
        }
        self.define(ctx, &out)?;
        self.consts.insert(out, value);
        Ok(())
    }

    fn define(&self, ctx: &Ctx, name: &str) -> Result<()> {
        if self.is_defined(name) {
            return Err(ctx.err(format!("output '{name}' is already defined")));
        }
        Ok(())
    }

    /// Constant value of input `i`, or an error saying the input must be constant.
    fn const_input(&self, ctx: &Ctx, i: usize) -> Result<&Const> {
        let name = ctx.req_input(i)?;
        self.consts.get(name).ok_or_else(|| {
            ctx.err(format!(
                "input '{name}' must be a constant (computed at compile time)"
            ))
        })
    }

    fn all_const(&self, names: &[&str]) -> bool {
        names.iter().all(|n| self.consts.contains_key(*n))
    }

    /// Adds a runtime node, or evaluates it when every input is constant.
    fn emit(&mut self, ctx: &Ctx, op: Op, inputs: &[&str]) -> Result<()> {
        let out = ctx.output()?.to_string();
        self.check_extra_outputs(ctx)?;
        self.emit_as(ctx, ctx.name.clone(), op, inputs, out)
    }

    /// Fails when an output after the first is read by a node or is a graph output.
    fn check_extra_outputs(&self, ctx: &Ctx) -> Result<()> {
        for extra in ctx.node.output.iter().skip(1) {
            if !extra.is_empty() && self.used.contains(extra) {
                return Err(ctx.err(format!("extra output '{extra}' is used; not supported")));
            }
        }
        Ok(())
    }

    /// A fresh tensor name derived from the first output of the node being imported.
    fn temp_name(&self, ctx: &Ctx, suffix: &str) -> Result<String> {
        let base = format!("{}::{suffix}", ctx.output()?);
        let mut name = base.clone();
        let mut n = 1;
        while self.is_defined(&name) || self.used.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        Ok(name)
    }

    /// A fresh node name derived from the name of the node being imported.
    fn temp_node_name(&mut self, ctx: &Ctx, suffix: &str) -> String {
        let base = format!("{}::{suffix}", ctx.name);
        let mut name = base.clone();
        let mut n = 1;
        while self.node_names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.node_names.insert(name.clone());
        name
    }

    /// Adds runtime node `name` computing tensor `out`, or evaluates it when every input is
    /// constant.
    fn emit_as(
        &mut self,
        ctx: &Ctx,
        name: String,
        op: Op,
        inputs: &[&str],
        out: String,
    ) -> Result<()> {
        let shapes: Vec<Vec<usize>> = inputs
            .iter()
            .map(|n| {
                self.shape_of(n)
                    .ok_or_else(|| ctx.err(format!("input '{n}' is not defined")))
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
        let out_shape = shape::infer(&op, &refs)
            .map_err(|m| ctx.shape_err(m))?
            .remove(0);
        let fits = out_shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .is_some_and(|n| n <= MAX_TENSOR_ELEMENTS);
        if !fits {
            return Err(ctx.shape_err(format!("output shape {out_shape:?} is too large")));
        }

        if self.all_const(inputs) {
            let values: Vec<ArrayD<f32>> =
                inputs.iter().map(|n| self.consts[*n].to_f32()).collect();
            let views: Vec<ArrayViewD<f32>> = values.iter().map(|v| v.view()).collect();
            let y = interp::eval_op(&op, &views)
                .map_err(|e| ctx.err(format!("constant folding failed: {e}")))?
                .remove(0);
            return self.set_const_as(ctx, out, Const::F32(y));
        }

        for n in inputs {
            if let Some(c) = self.consts.get(*n) {
                if !self.graph.constants.contains_key(*n) {
                    self.graph.constants.insert(n.to_string(), c.to_f32());
                }
            }
        }
        self.define(ctx, &out)?;
        self.graph.shapes.insert(out.clone(), out_shape);
        self.graph.nodes.push(Node {
            name,
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out],
        });
        Ok(())
    }

    fn add_output(&mut self, output: &ValueInfoProto) -> Result<()> {
        let name = &output.name;
        if let Some(value) = self.consts.get(name) {
            // A constant output (everything folded) is computed by an Identity of the value.
            let mut source = format!("{name}::value");
            while self.is_defined(&source) || self.graph.constants.contains_key(&source) {
                source.push('_');
            }
            let value = value.to_f32();
            self.graph.replace_uses(name, &source);
            if let Some(c) = self.graph.constants.remove(name) {
                self.graph.constants.insert(source.clone(), c);
            } else {
                self.graph.constants.insert(source.clone(), value.clone());
            }
            let mut node_name = format!("{name}::output");
            while self.node_names.contains(&node_name) {
                node_name.push('_');
            }
            self.node_names.insert(node_name.clone());
            self.consts.remove(name);
            self.graph
                .shapes
                .insert(name.clone(), value.shape().to_vec());
            self.graph.nodes.push(Node {
                name: node_name,
                op: Op::Identity,
                inputs: vec![source],
                outputs: vec![name.clone()],
            });
        }
        let shape = self
            .graph
            .shapes
            .get(name)
            .cloned()
            .ok_or_else(|| CompileError::tensor(name, "graph output is never computed"))?;
        if let Some(type_proto::Value::TensorType(t)) =
            output.r#type.as_ref().and_then(|t| t.value.as_ref())
        {
            if let Some(declared) = &t.shape {
                let mismatch = declared.dim.len() != shape.len()
                    || declared.dim.iter().zip(&shape).skip(1).any(|(d, &s)| {
                        matches!(d.value, Some(dimension::Value::DimValue(v)) if v > 0 && v as usize != s)
                    });
                if mismatch {
                    return Err(CompileError::tensor(
                        name,
                        format!("declared output shape differs from the inferred shape {shape:?}"),
                    ));
                }
            }
        }
        self.graph.outputs.push(TensorInfo::new(name, shape));
        Ok(())
    }

    fn import_node(&mut self, idx: usize, node: &NodeProto) -> Result<()> {
        let ctx = Ctx {
            name: self.unique_name(idx, node),
            node,
            opset: self.opset,
        };
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(CompileError::UnsupportedOp {
                node: ctx.name,
                op_type: format!("{}.{}", node.domain, node.op_type),
            });
        }
        for input in node.input.iter().filter(|s| !s.is_empty()) {
            if !self.is_defined(input) {
                return Err(ctx.err(format!(
                    "input '{input}' is not defined (missing initializer, or nodes not in topological order)"
                )));
            }
        }
        match node.op_type.as_str() {
            "Constant" => self.constant(&ctx),
            "ConstantOfShape" => self.constant_of_shape(&ctx),
            "Shape" => self.shape_op(&ctx),
            "Gather" => self.gather(&ctx),
            "Unsqueeze" | "Squeeze" => self.squeeze_unsqueeze(&ctx),
            "Concat" => self.concat(&ctx),
            "Cast" => self.cast(&ctx),
            "Identity" => {
                let x = ctx.req_input(0)?;
                self.emit(&ctx, Op::Identity, &[x])
            }
            "Dropout" => self.dropout(&ctx),
            "Gemm" => {
                let op = Op::Gemm {
                    alpha: ctx.attr_f("alpha", 1.0)?,
                    beta: ctx.attr_f("beta", 1.0)?,
                    trans_a: ctx.attr_i("transA", 0)? != 0,
                    trans_b: ctx.attr_i("transB", 0)? != 0,
                };
                let mut inputs = vec![ctx.req_input(0)?, ctx.req_input(1)?];
                inputs.extend(ctx.input(2));
                self.emit(&ctx, op, &inputs)
            }
            "MatMul" => {
                let inputs = [ctx.req_input(0)?, ctx.req_input(1)?];
                self.emit(&ctx, Op::MatMul, &inputs)
            }
            "Add" => self.binary(&ctx, BinaryOp::Add),
            "Sub" => self.binary(&ctx, BinaryOp::Sub),
            "Mul" => self.binary(&ctx, BinaryOp::Mul),
            "Div" => self.binary(&ctx, BinaryOp::Div),
            "Relu" => {
                let x = ctx.req_input(0)?;
                self.emit(&ctx, Op::Relu, &[x])
            }
            "Clip" => self.clip(&ctx),
            "Flatten" => {
                let x = ctx.req_input(0)?;
                let rank = self.shape_of(x).map_or(0, |s| s.len());
                let axis = shape::normalize_axis(ctx.attr_i("axis", 1)?, rank, true)
                    .map_err(|m| ctx.shape_err(m))?;
                self.emit(&ctx, Op::Flatten { axis }, &[x])
            }
            "Reshape" => {
                let x = ctx.req_input(0)?;
                let spec = self.const_input(&ctx, 1)?.ints();
                let allowzero = ctx.attr_i("allowzero", 0)? != 0;
                self.emit(
                    &ctx,
                    Op::Reshape {
                        shape: spec,
                        allowzero,
                    },
                    &[x],
                )
            }
            "Conv" => self.conv(&ctx),
            "BatchNormalization" => self.batch_norm(&ctx),
            "MaxPool" => self.pool(&ctx, true),
            "AveragePool" => self.pool(&ctx, false),
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let x = ctx.req_input(0)?;
                let op = if node.op_type == "GlobalAveragePool" {
                    Op::GlobalAvgPool
                } else {
                    Op::GlobalMaxPool
                };
                self.emit(&ctx, op, &[x])
            }
            "LRN" => self.lrn(&ctx),
            "LeakyRelu" => {
                let x = ctx.req_input(0)?;
                let alpha = ctx.attr_f("alpha", 0.01)?;
                self.emit(&ctx, Op::LeakyRelu { alpha }, &[x])
            }
            "Sigmoid" => {
                let x = ctx.req_input(0)?;
                self.emit(&ctx, Op::Sigmoid, &[x])
            }
            "Tanh" => {
                let x = ctx.req_input(0)?;
                self.emit(&ctx, Op::Tanh, &[x])
            }
            "Transpose" => self.transpose(&ctx),
            "Pad" => self.pad(&ctx),
            "Slice" => self.slice(&ctx),
            "Sum" => self.sum_mean(&ctx, false),
            "Mean" => self.sum_mean(&ctx, true),
            "Range" => self.range(&ctx),
            "Expand" => self.expand(&ctx),
            "Size" => self.size(&ctx),
            "Neg" | "Abs" | "Floor" | "Ceil" | "Sqrt" | "Exp" | "Log" | "Reciprocal" | "Not"
            | "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or"
            | "Pow" | "Max" | "Min" | "Where" => self.const_elementwise(&ctx),
            "Softmax" => {
                let x = ctx.req_input(0)?;
                let rank = self.shape_of(x).map_or(0, |s| s.len());
                let coerce_2d = ctx.opset < 13;
                let default = if coerce_2d { 1 } else { -1 };
                let axis = shape::normalize_axis(ctx.attr_i("axis", default)?, rank, false)
                    .map_err(|m| ctx.shape_err(m))?;
                self.emit(&ctx, Op::Softmax { axis, coerce_2d }, &[x])
            }
            _ => Err(CompileError::UnsupportedOp {
                node: ctx.name,
                op_type: node.op_type.clone(),
            }),
        }
    }

    fn constant(&mut self, ctx: &Ctx) -> Result<()> {
        let node = ctx.node;
        let attr = match node.attribute.as_slice() {
            [a] => a,
            _ => return Err(ctx.err("needs exactly one value attribute")),
        };
        let value = match attr.name.as_str() {
            "value" => {
                let t = attr
                    .t
                    .as_ref()
                    .ok_or_else(|| ctx.err("'value' has no tensor"))?;
                tensor_from_proto(t)?
            }
            "value_float" => Const::F32(ArrayD::from_elem(IxDyn(&[]), attr.f)),
            "value_floats" => Const::F32(
                ArrayD::from_shape_vec(IxDyn(&[attr.floats.len()]), attr.floats.clone())
                    .map_err(|e| ctx.err(e.to_string()))?,
            ),
            "value_int" => Const::I64(ArrayD::from_elem(IxDyn(&[]), attr.i)),
            "value_ints" => Const::I64(
                ArrayD::from_shape_vec(IxDyn(&[attr.ints.len()]), attr.ints.clone())
                    .map_err(|e| ctx.err(e.to_string()))?,
            ),
            other => return Err(ctx.err(format!("attribute '{other}' is not supported"))),
        };
        self.set_const(ctx, value)
    }

    fn constant_of_shape(&mut self, ctx: &Ctx) -> Result<()> {
        let dims = self.const_input(ctx, 0)?.ints();
        let shape = dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| ctx.err(format!("negative dim in {dims:?}"))))
            .collect::<Result<Vec<usize>>>()?;
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_CONST_ELEMENTS)
            .ok_or_else(|| ctx.err(format!("shape {dims:?} is too large")))?;
        let fill = match ctx.attr("value", attribute_type::TENSOR)? {
            None => Const::F32(ArrayD::zeros(IxDyn(&[1]))),
            Some(a) => tensor_from_proto(
                a.t.as_ref()
                    .ok_or_else(|| ctx.err("'value' has no tensor"))?,
            )?,
        };
        if fill.len() != 1 {
            return Err(ctx.err("'value' must hold exactly one element"));
        }
        let _ = numel;
        let value = match fill {
            Const::F32(v) => Const::F32(ArrayD::from_elem(
                IxDyn(&shape),
                v.iter().copied().next().unwrap_or(0.0),
            )),
            Const::I64(v) => Const::I64(ArrayD::from_elem(
                IxDyn(&shape),
                v.iter().copied().next().unwrap_or(0),
            )),
        };
        self.set_const(ctx, value)
    }

    fn shape_op(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        let dims = self
            .shape_of(x)
            .ok_or_else(|| ctx.err(format!("input '{x}' is not defined")))?;
        let rank = dims.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
        let (start, end) = if ctx.opset >= 15 {
            (
                clamp(ctx.attr_i("start", 0)?),
                clamp(ctx.attr_i("end", rank)?),
            )
        } else {
            (0, dims.len())
        };
        let values: Vec<i64> = dims
            .get(start..end.max(start))
            .unwrap_or(&[])
            .iter()
            .map(|&d| d as i64)
            .collect();
        let n = values.len();
        self.set_const(
            ctx,
            Const::I64(
                ArrayD::from_shape_vec(IxDyn(&[n]), values).map_err(|e| ctx.err(e.to_string()))?,
            ),
        )
    }

    fn gather(&mut self, ctx: &Ctx) -> Result<()> {
        if !self.consts.contains_key(ctx.req_input(0)?) {
            return self.gather_runtime(ctx);
        }
        let data = self.const_input(ctx, 0)?;
        let indices = self.const_input(ctx, 1)?;
        let rank = data.shape().len();
        let axis = shape::normalize_axis(ctx.attr_i("axis", 0)?, rank, false)
            .map_err(|m| ctx.shape_err(m))?;
        let idx = indices.ints();
        let idx_shape = indices.shape().to_vec();
        let out = match data {
            Const::F32(a) => Const::F32(gather(a, &idx, &idx_shape, axis).map_err(|m| ctx.err(m))?),
            Const::I64(a) => Const::I64(gather(a, &idx, &idx_shape, axis).map_err(|m| ctx.err(m))?),
        };
        self.set_const(ctx, out)
    }

    fn squeeze_unsqueeze(&mut self, ctx: &Ctx) -> Result<()> {
        let unsqueeze = ctx.op_type() == "Unsqueeze";
        let x = ctx.req_input(0)?;
        let dims = self
            .shape_of(x)
            .ok_or_else(|| ctx.err(format!("input '{x}' is not defined")))?;
        let axes = if ctx.opset >= 13 {
            match ctx.input(1) {
                Some(_) => Some(self.const_input(ctx, 1)?.ints()),
                None => None,
            }
        } else {
            ctx.attr_ints("axes")?
        };
        let out_shape = if unsqueeze {
            let axes = axes.ok_or_else(|| ctx.err("missing 'axes'"))?;
            let out_rank = dims.len() + axes.len();
            let mut norm = axes
                .iter()
                .map(|&a| shape::normalize_axis(a, out_rank, false))
                .collect::<std::result::Result<Vec<usize>, String>>()
                .map_err(|m| ctx.shape_err(m))?;
            norm.sort_unstable();
            if norm.windows(2).any(|w| w[0] == w[1]) {
                return Err(ctx.err(format!("repeated axis in {axes:?}")));
            }
            let mut rest = dims.iter();
            (0..out_rank)
                .map(|i| {
                    if norm.binary_search(&i).is_ok() {
                        1
                    } else {
                        rest.next().copied().unwrap_or(1)
                    }
                })
                .collect::<Vec<usize>>()
        } else {
            let norm: Vec<usize> = match axes {
                Some(axes) => axes
                    .iter()
                    .map(|&a| shape::normalize_axis(a, dims.len(), false))
                    .collect::<std::result::Result<_, String>>()
                    .map_err(|m| ctx.shape_err(m))?,
                None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
            };
            if let Some(&a) = norm.iter().find(|&&a| dims[a] != 1) {
                return Err(ctx.shape_err(format!("cannot squeeze axis {a} of shape {dims:?}")));
            }
            dims.iter()
                .enumerate()
                .filter(|(i, _)| !norm.contains(i))
                .map(|(_, &d)| d)
                .collect()
        };
        if let Some(c) = self.consts.get(x) {
            let value = c.reshape(&out_shape).map_err(|m| ctx.err(m))?;
            return self.set_const(ctx, value);
        }
        let op = Op::Reshape {
            shape: out_shape.iter().map(|&d| d as i64).collect(),
            allowzero: true,
        };
        self.emit(ctx, op, &[x])
    }

    fn cast(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        let to = ctx
            .attr("to", attribute_type::INT)?
            .ok_or_else(|| ctx.err("missing 'to'"))?
            .i as i32;
        let to_float = matches!(
            to,
            data_type::FLOAT | data_type::DOUBLE | data_type::FLOAT16 | data_type::BFLOAT16
        );
        let to_int = matches!(
            to,
            data_type::INT64
                | data_type::INT32
                | data_type::INT16
                | data_type::INT8
                | data_type::UINT64
                | data_type::UINT32
                | data_type::UINT16
                | data_type::UINT8
        );
        if !to_float && !to_int && to != data_type::BOOL {
            return Err(ctx.err(format!("cast to {} is not supported", data_type::name(to))));
        }
        match self.consts.get(x) {
            Some(c) => {
                let value = match to {
                    data_type::FLOAT16 => Const::F32(c.to_f32().mapv(round_to_f16)),
                    data_type::BFLOAT16 => Const::F32(c.to_f32().mapv(round_to_bf16)),
                    _ if to_float => Const::F32(c.to_f32()),
                    data_type::BOOL => Const::I64(c.to_f32().mapv(|v| i64::from(v != 0.0))),
                    // Integer targets wrap to their width, as numpy's astype does.
                    data_type::INT32 => Const::I64(c.to_i64().mapv(|v| i64::from(v as i32))),
                    data_type::INT16 => Const::I64(c.to_i64().mapv(|v| i64::from(v as i16))),
                    data_type::INT8 => Const::I64(c.to_i64().mapv(|v| i64::from(v as i8))),
                    data_type::UINT32 => Const::I64(c.to_i64().mapv(|v| i64::from(v as u32))),
                    data_type::UINT16 => Const::I64(c.to_i64().mapv(|v| i64::from(v as u16))),
                    data_type::UINT8 => Const::I64(c.to_i64().mapv(|v| i64::from(v as u8))),
                    _ => Const::I64(c.to_i64()),
                };
                self.set_const(ctx, value)
            }
            // f32 values are exact doubles: the runtime graph stays in f32.
            None if to == data_type::FLOAT || to == data_type::DOUBLE => {
                self.emit(ctx, Op::Identity, &[x])
            }
            None => Err(ctx.err(format!(
                "cast of a runtime tensor to {} is not supported",
                data_type::name(to)
            ))),
        }
    }

    fn dropout(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        if let Some(mask) = ctx.node.output.get(1).filter(|m| !m.is_empty()) {
            if self.used.contains(mask) {
                return Err(ctx.err(format!("mask output '{mask}' is used; not supported")));
            }
        }
        if ctx.input(2).is_some() && self.const_input(ctx, 2)?.ints().iter().any(|&v| v != 0) {
            return Err(ctx.err("training_mode=true is not supported"));
        }
        self.emit(ctx, Op::Dropout, &[x])
    }

    fn binary(&mut self, ctx: &Ctx, op: BinaryOp) -> Result<()> {
        let (a, b) = (ctx.req_input(0)?, ctx.req_input(1)?);
        if let (Some(Const::I64(p)), Some(Const::I64(q))) = (self.consts.get(a), self.consts.get(b))
        {
            let y = int_binary(op, p, q).map_err(|m| ctx.err(m))?;
            return self.set_const(ctx, Const::I64(y));
        }
        self.emit(ctx, Op::Binary(op), &[a, b])
    }

    fn clip(&mut self, ctx: &Ctx) -> Result<()> {
        let x = ctx.req_input(0)?;
        let (min, max) = if ctx.opset < 11 {
            (
                ctx.attr_f("min", f32::NEG_INFINITY)?,
                ctx.attr_f("max", f32::INFINITY)?,
            )
        } else {
            let bound = |i: usize, default: f32| -> Result<f32> {
                match ctx.input(i) {
                    None => Ok(default),
                    Some(_) => {
                        let c = self.const_input(ctx, i)?;
                        if c.len() != 1 {
                            return Err(ctx.err(format!(
                                "bound #{i} must be a scalar, got shape {:?}",
                                c.shape()
                            )));
                        }
                        Ok(c.to_f32().iter().copied().next().unwrap_or(default))
                    }
                }
            };
            (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
        };
        self.emit(ctx, Op::Clip { min, max }, &[x])
    }
}

fn gather<T: Clone>(
    data: &ArrayD<T>,
    idx: &[i64],
    idx_shape: &[usize],
    axis: usize,
) -> std::result::Result<ArrayD<T>, String> {
    let dim = data.shape()[axis];
    let mut out_shape = data.shape()[..axis].to_vec();
    out_shape.extend_from_slice(idx_shape);
    out_shape.extend_from_slice(&data.shape()[axis + 1..]);
    let parts = idx
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < dim)
                .map(|j| data.index_axis(Axis(axis), j))
                .ok_or_else(|| format!("index {i} out of range for dim {dim}"))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    if parts.is_empty() {
        return ArrayD::from_shape_vec(IxDyn(&out_shape), Vec::new()).map_err(|e| e.to_string());
    }
    let stacked = ndarray::stack(Axis(axis), &parts).map_err(|e| e.to_string())?;
    stacked
        .to_shape(IxDyn(&out_shape))
        .map(|c| c.into_owned())
        .map_err(|e| e.to_string())
}

fn int_binary(
    op: BinaryOp,
    a: &ArrayD<i64>,
    b: &ArrayD<i64>,
) -> std::result::Result<ArrayD<i64>, String> {
    let out = shape::broadcast(a.shape(), b.shape())?;
    let a = a
        .broadcast(IxDyn(&out))
        .ok_or("operands do not broadcast")?;
    let b = b
        .broadcast(IxDyn(&out))
        .ok_or("operands do not broadcast")?;
    if op == BinaryOp::Div && b.iter().any(|&v| v == 0) {
        return Err("integer division by zero".into());
    }
    Ok(Zip::from(&a).and(&b).map_collect(|&p, &q| match op {
        BinaryOp::Add => p.wrapping_add(q),
        BinaryOp::Sub => p.wrapping_sub(q),
        BinaryOp::Mul => p.wrapping_mul(q),
        BinaryOp::Div => p.wrapping_div(q),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(round_to_f16(1.0 + 2f32.powi(-11)), 1.0); // tie to even
        assert_eq!(
            round_to_f16(1.0 + 3.0 * 2f32.powi(-11)),
            1.0 + 2f32.powi(-9)
        );
        assert_eq!(round_to_f16(0.1), f16_to_f32(0x2e66));
        assert_eq!(round_to_f16(2f32.powi(-25) * 3.0), 2f32.powi(-23)); // subnormal
        assert_eq!(round_to_f16(70000.0), f32::INFINITY);
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(
            round_to_bf16(1.0 + 3.0 * 2f32.powi(-8)),
            1.0 + 2f32.powi(-6)
        );
    }

    #[test]
    fn raw_and_typed_tensor_data() {
        let raw = TensorProto {
            name: "w".into(),
            dims: vec![2, 2],
            data_type: data_type::FLOAT,
            raw_data: [1.0f32, 2.0, 3.0, 4.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            ..Default::default()
        };
        let typed = TensorProto {
            float_data: vec![1.0, 2.0, 3.0, 4.0],
            raw_data: vec![],
            ..raw.clone()
        };
        assert_eq!(tensor_to_f32(&raw).unwrap(), tensor_to_f32(&typed).unwrap());
        let short = TensorProto {
            raw_data: vec![0; 7],
            ..raw.clone()
        };
        assert!(tensor_to_f32(&short).is_err());
        let external = TensorProto {
            data_location: DATA_LOCATION_EXTERNAL,
            ..raw
        };
        let err = tensor_to_f32(&external).unwrap_err().to_string();
        assert!(err.contains("external data"), "{err}");
    }

    #[test]
    fn gather_and_int_arith() {
        let data = ArrayD::from_shape_vec(IxDyn(&[4]), vec![1i64, 64, 7, 7]).unwrap();
        let g = gather(&data, &[0], &[], 0).unwrap();
        assert_eq!(g.shape(), &[] as &[usize]);
        assert_eq!(g.iter().copied().collect::<Vec<_>>(), vec![1]);
        let g = gather(&data, &[-1, 1], &[2], 0).unwrap();
        assert_eq!(g.iter().copied().collect::<Vec<_>>(), vec![7, 64]);
        assert!(gather(&data, &[4], &[1], 0).is_err());
        let p = gather(&data, &[2, 3], &[2], 0).unwrap();
        let m = int_binary(BinaryOp::Mul, &p, &ArrayD::from_elem(IxDyn(&[]), 2)).unwrap();
        assert_eq!(m.iter().copied().collect::<Vec<_>>(), vec![14, 14]);
        assert!(int_binary(BinaryOp::Div, &p, &ArrayD::from_elem(IxDyn(&[]), 0)).is_err());
    }
}
