//! Lazy, memoized, recursive evaluation of Ansible variables.
//!
//! A variable is rendered the first time a template (or a caller) asks for it, with every
//! variable it references rendered the same way, and the result is cached. As in Ansible:
//! - a string that is one `{{ expression }}` evaluates to the expression's native value;
//!   any other template renders to a string (`"True"`/`"False"` becoming booleans);
//! - a variable whose template uses an undefined value is itself undefined (so `default` and
//!   `is defined` see through it), and the error, when the value is finally used, names the
//!   undefined variable and the chain of variables that led to it;
//! - syntax errors and failing filters are hard errors, never swallowed by `default`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use minijinja::value::{Object, ObjectRepr};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

use super::{Origin, VarSet, ansible};

/// One link of an undefined-variable chain: a variable (or list field) whose value needed the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndefinedChainLink {
    pub var: String,
    pub origin: Origin,
}

/// Errors from rendering variables.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EvalError {
    /// A value was used while undefined.
    #[error("{}", render_undefined(.name, .expr.as_deref(), .chain, .missing.as_deref()))]
    Undefined {
        /// The undefined variable (or expression, when it is not a plain variable).
        name: String,
        /// The template expression that used it, when known.
        expr: Option<String>,
        /// Outermost first: the variable asked for, then each variable it needed.
        chain: Vec<UndefinedChainLink>,
        /// When the undefined value is a key a mapping does not have: which.
        missing: Option<Box<MissingKey>>,
    },
    /// A Jinja syntax error in a variable's template.
    #[error("{origin}: Jinja syntax error in `{var}`: {message}\n  template: {template}")]
    Syntax {
        var: String,
        origin: Origin,
        message: String,
        template: String,
    },
    /// A filter, test or operation failed while rendering.
    #[error("{origin}: cannot render `{var}`: {message}\n  template: {template}")]
    Render {
        var: String,
        origin: Origin,
        message: String,
        template: String,
    },
    /// A variable refers to itself.
    #[error("recursive loop: {} refers to itself", .cycle.join(" -> "))]
    Recursion { cycle: Vec<String> },
}

impl EvalError {
    /// The undefined name when this is an undefined-variable error.
    pub fn undefined_name(&self) -> Option<&str> {
        match self {
            EvalError::Undefined { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// A key looked up in a mapping (or an index in a list) that is not there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingKey {
    /// The mapping as written in the template: `etcd_supported_versions`, `sums[image_arch]`.
    pub mapping: String,
    /// The key as written (`kube_major_version`, `'arm64'`, `.y`).
    pub key_expr: String,
    /// The key's value, Python style (`'9.9'`, `3`).
    pub key: String,
    /// The keys the mapping has, Python style, in order (indexes `0`… for a list).
    pub keys: Vec<String>,
}

/// Most keys shown of a mapping that lacks one.
const KEYS_SHOWN: usize = 24;

fn render_undefined(
    name: &str,
    expr: Option<&str>,
    chain: &[UndefinedChainLink],
    missing: Option<&MissingKey>,
) -> String {
    let mut s = match missing {
        Some(m) => format!("`{}` has no key {}", m.mapping, m.key),
        None => format!("variable `{name}` is undefined"),
    };
    if let Some(expr) = expr
        && expr != name
    {
        s.push_str(&format!(" (in `{expr}`)"));
    } else if missing.is_some() {
        s.push_str(&format!(" (in `{name}`)"));
    }
    if let Some(m) = missing {
        let mut keys = m
            .keys
            .iter()
            .take(KEYS_SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if m.keys.is_empty() {
            keys = "none, it is empty".into();
        } else if m.keys.len() > KEYS_SHOWN {
            keys.push_str(&format!(", … ({} in all)", m.keys.len()));
        }
        s.push_str(&format!("\n  its keys: {keys}"));
    }
    for link in chain.iter().rev() {
        s.push_str(&format!("\n  needed by `{}` ({})", link.var, link.origin));
    }
    match missing {
        Some(m) if !is_literal(&m.key_expr) => s.push_str(&format!(
            "\n  hint: the key comes from `{}` ({}): choose variables that make it one of the keys, or add the key to `{}` (with -e)",
            m.key_expr, m.key, m.mapping
        )),
        Some(m) => s.push_str(&format!(
            "\n  hint: add the key {} to `{}` (in the variable files or with -e)",
            m.key, m.mapping
        )),
        None => s.push_str(&format!(
            "\n  hint: define it in the variable files or pass it with -e {}=VALUE",
            name.split(['.', '[']).next().unwrap_or(name)
        )),
    }
    s
}

/// Whether a key expression is a literal (`'x'`, `3`, `.name`) rather than a variable.
fn is_literal(key_expr: &str) -> bool {
    let k = key_expr.trim();
    k.starts_with(['\'', '"', '.']) || k.parse::<f64>().is_ok()
}

#[derive(Clone)]
enum Cached {
    Value(Value),
    Undefined(EvalError),
}

struct Frame {
    var: String,
    origin: Origin,
    /// Names looked up from this frame that were undefined, in order.
    misses: Vec<String>,
}

pub(crate) struct Inner {
    me: Weak<Inner>,
    vars: VarSet,
    env: Environment<'static>,
    /// Names the environment itself provides (`lookup`, `range`, …): not variables.
    globals: std::collections::HashSet<String>,
    cache: Mutex<HashMap<String, Cached>>,
    stack: Mutex<Vec<Frame>>,
    /// A hard error raised inside a nested lookup (which can only answer "undefined").
    hard_error: Mutex<Option<EvalError>>,
}

/// Renders variables of a [`VarSet`] on demand. Cheap to clone.
#[derive(Clone)]
pub struct Evaluator {
    inner: Arc<Inner>,
}

impl fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evaluator")
            .field("vars", &self.inner.vars.len())
            .finish()
    }
}

/// The root of every template context: variables are resolved through the evaluator.
#[derive(Debug)]
struct Scope {
    inner: Weak<Inner>,
}

impl Object for Scope {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let inner = self.inner.upgrade()?;
        inner.lookup(key.as_str()?)
    }
}

impl Evaluator {
    pub fn new(vars: VarSet) -> Self {
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let mut env = Environment::new();
            env.set_undefined_behavior(UndefinedBehavior::Strict);
            env.set_debug(true);
            ansible::register(&mut env, weak.clone());
            let globals = env.globals().map(|(name, _)| name.to_string()).collect();
            Inner {
                globals,
                me: weak.clone(),
                vars,
                env,
                cache: Mutex::new(HashMap::new()),
                stack: Mutex::new(Vec::new()),
                hard_error: Mutex::new(None),
            }
        });
        Evaluator { inner }
    }

    pub fn vars(&self) -> &VarSet {
        &self.inner.vars
    }

    /// Renders one variable completely.
    pub fn var(&self, name: &str) -> Result<Value, EvalError> {
        self.inner.var(name)
    }

    /// Renders a raw value (for example a field of a `downloads` entry); `label` and `origin`
    /// name it in errors.
    pub fn render(&self, raw: &Value, label: &str, origin: &Origin) -> Result<Value, EvalError> {
        self.inner.render_framed(raw, label, origin)
    }

    /// Renders a template string given on its own (not from a variable file).
    pub fn render_str(&self, template: &str, label: &str) -> Result<Value, EvalError> {
        self.inner
            .render_framed(&Value::from(template), label, &Origin::described(label))
    }
}

impl Inner {
    pub(crate) fn var(&self, name: &str) -> Result<Value, EvalError> {
        let result = self.lookup(name);
        if let Some(err) = self.hard_error.lock().unwrap().take() {
            return Err(err);
        }
        match result {
            Some(v) => Ok(v),
            None => match self.cache.lock().unwrap().get(name) {
                Some(Cached::Undefined(e)) => Err(e.clone()),
                _ => Err(EvalError::Undefined {
                    name: name.to_string(),
                    expr: None,
                    chain: vec![],
                    missing: None,
                }),
            },
        }
    }

    /// Resolves a variable for a template. `None` means undefined; hard errors go to
    /// `hard_error` (the template engine can only be told "undefined").
    pub(crate) fn lookup(&self, name: &str) -> Option<Value> {
        if let Some(cached) = self.cache.lock().unwrap().get(name).cloned() {
            return match cached {
                Cached::Value(v) => Some(v),
                Cached::Undefined(_) => {
                    self.note_miss(name);
                    None
                }
            };
        }
        let Some(def) = self.vars.get(name) else {
            if !self.globals.contains(name) {
                self.note_miss(name);
            }
            return None;
        };
        {
            let stack = self.stack.lock().unwrap();
            if let Some(pos) = stack.iter().position(|f| f.var == name) {
                let mut cycle: Vec<String> = stack[pos..].iter().map(|f| f.var.clone()).collect();
                cycle.push(name.to_string());
                drop(stack);
                self.set_hard_error(EvalError::Recursion { cycle });
                return None;
            }
        }
        match self.render_framed(&def.value, name, &def.origin) {
            Ok(v) => {
                self.cache
                    .lock()
                    .unwrap()
                    .insert(name.to_string(), Cached::Value(v.clone()));
                Some(v)
            }
            Err(e @ EvalError::Undefined { .. }) => {
                // Not cached while a hard error is pending: it may be what made this undefined.
                if self.hard_error.lock().unwrap().is_some() {
                    return None;
                }
                self.cache
                    .lock()
                    .unwrap()
                    .insert(name.to_string(), Cached::Undefined(e));
                self.note_miss(name);
                None
            }
            Err(e) => {
                self.set_hard_error(e);
                None
            }
        }
    }

    fn note_miss(&self, name: &str) {
        if let Some(frame) = self.stack.lock().unwrap().last_mut() {
            frame.misses.push(name.to_string());
        }
    }

    fn set_hard_error(&self, e: EvalError) {
        let mut slot = self.hard_error.lock().unwrap();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn take_hard_error(&self) -> Option<EvalError> {
        self.hard_error.lock().unwrap().take()
    }

    fn render_framed(&self, raw: &Value, label: &str, origin: &Origin) -> Result<Value, EvalError> {
        self.stack.lock().unwrap().push(Frame {
            var: label.to_string(),
            origin: origin.clone(),
            misses: vec![],
        });
        let result = self.render_value(raw);
        let frame = self
            .stack
            .lock()
            .unwrap()
            .pop()
            .expect("frame pushed above");
        // A hard error from a nested lookup wins over whatever the engine made of the
        // "undefined" it was given instead.
        let outermost = self.stack.lock().unwrap().is_empty();
        if outermost && let Some(e) = self.take_hard_error() {
            return Err(e);
        }
        result.map_err(|e| self.convert_error(e, &frame))
    }

    fn render_value(&self, raw: &Value) -> Result<Value, Pending> {
        if let Some(s) = raw.as_str() {
            return if has_template(s) {
                self.render_template(s)
            } else {
                Ok(raw.clone())
            };
        }
        match raw.kind() {
            minijinja::value::ValueKind::Seq => {
                let mut out = Vec::new();
                for item in raw.try_iter().map_err(Pending::engine_plain)? {
                    out.push(self.render_value(&item)?);
                }
                Ok(Value::from(out))
            }
            minijinja::value::ValueKind::Map => {
                let mut out = indexmap::IndexMap::new();
                for key in raw.try_iter().map_err(Pending::engine_plain)? {
                    let item = raw.get_item(&key).map_err(Pending::engine_plain)?;
                    out.insert(key, self.render_value(&item)?);
                }
                Ok(Value::from(out))
            }
            _ => Ok(raw.clone()),
        }
    }

    fn render_template(&self, source: &str) -> Result<Value, Pending> {
        let escaped = escape_backslashes(source);
        let source = escaped.as_str();
        let root = Value::from_object(Scope {
            inner: self.me.clone(),
        });
        if let Some(expr) = single_expression(source) {
            let compiled = self
                .env
                .compile_expression(expr)
                .map_err(|e| Pending::engine(e, source))?;
            let value = compiled
                .eval(root)
                .map_err(|e| Pending::engine(e, source))?;
            if value.is_undefined() {
                return Err(Pending::UndefinedResult {
                    template: source.to_string(),
                });
            }
            return Ok(value);
        }
        let tmpl = self
            .env
            .template_from_str(source)
            .map_err(|e| Pending::engine(e, source))?;
        let text = tmpl.render(root).map_err(|e| Pending::engine(e, source))?;
        Ok(match text.as_str() {
            "True" => Value::from(true),
            "False" => Value::from(false),
            _ => Value::from(text),
        })
    }

    fn convert_error(&self, pending: Pending, frame: &Frame) -> EvalError {
        let link = UndefinedChainLink {
            var: frame.var.clone(),
            origin: frame.origin.clone(),
        };
        match pending {
            Pending::UndefinedResult { template } => {
                let expr = single_expression(&template).map(|e| e.trim().to_string());
                self.undefined_from_misses(frame, link, expr, None, &template)
            }
            Pending::Engine { error, template } => match error.kind() {
                ErrorKind::UndefinedError => {
                    let expr = error
                        .template_source()
                        .zip(error.range())
                        .and_then(|(src, r)| src.get(r).map(|s| s.trim().to_string()));
                    self.undefined_from_misses(frame, link, expr, error.detail(), &template)
                }
                ErrorKind::SyntaxError => EvalError::Syntax {
                    var: frame.var.clone(),
                    origin: frame.origin.clone(),
                    message: engine_message(&error),
                    template,
                },
                _ => EvalError::Render {
                    var: frame.var.clone(),
                    origin: frame.origin.clone(),
                    message: engine_message(&error),
                    template,
                },
            },
        }
    }

    /// Names the undefined variable: the latest miss of this frame that the failing expression
    /// mentions (or the latest miss at all), following its own chain when it is a variable that
    /// is undefined because of another.
    fn undefined_from_misses(
        &self,
        frame: &Frame,
        link: UndefinedChainLink,
        expr: Option<String>,
        detail: Option<&str>,
        template: &str,
    ) -> EvalError {
        let mentioned = |name: &str| {
            expr.as_deref().is_none_or(|e| mentions(e, name))
                || detail.is_some_and(|d| mentions(d, name))
        };
        let miss = frame
            .misses
            .iter()
            .rev()
            .find(|m| mentioned(m))
            .or_else(|| {
                if expr.is_none() {
                    frame.misses.last()
                } else {
                    None
                }
            })
            .cloned();
        let Some(miss) = miss else {
            // No variable is undefined: a key is missing from a mapping.
            if let Some((chain_text, missing)) = self.find_missing_key(template, expr.as_deref()) {
                return EvalError::Undefined {
                    name: chain_text,
                    expr: None,
                    chain: vec![link],
                    missing: Some(Box::new(missing)),
                };
            }
            return EvalError::Undefined {
                name: expr.clone().unwrap_or_else(|| "<unknown>".into()),
                expr,
                chain: vec![link],
                missing: None,
            };
        };
        let nested = match self.cache.lock().unwrap().get(&miss) {
            Some(Cached::Undefined(e)) => Some(e.clone()),
            _ => None,
        };
        match nested {
            Some(EvalError::Undefined {
                name,
                expr: inner_expr,
                chain,
                missing,
            }) => {
                let mut full = vec![link];
                full.extend(chain);
                EvalError::Undefined {
                    name,
                    expr: inner_expr,
                    chain: full,
                    missing,
                }
            }
            _ => EvalError::Undefined {
                name: miss,
                expr,
                chain: vec![link],
                missing: None,
            },
        }
    }
}

impl Inner {
    /// The lookup of `template` that fails because a mapping lacks the key: every chain of
    /// subscripts and attributes in its `{{ }}` and `{% %}` blocks (`a[b][c]`, `a.b`) is
    /// followed, and the first one that reaches a defined mapping without the key is the
    /// answer, preferring one the failing expression `expr` mentions and skipping those that
    /// `default` or `is defined` guard. Returns the chain up to the missing key and what is
    /// missing.
    fn find_missing_key(&self, template: &str, expr: Option<&str>) -> Option<(String, MissingKey)> {
        // Evaluating sub-expressions must not disturb the frame stack nor leave errors behind.
        let pending_before = self.hard_error.lock().unwrap().is_some();
        self.stack.lock().unwrap().push(Frame {
            var: String::new(),
            origin: Origin::described(""),
            misses: vec![],
        });
        let mut found = Vec::new();
        for block in template_blocks(template) {
            for chain in subscript_chains(block) {
                if chain.guarded {
                    continue;
                }
                if let Some(hit) = self.follow_chain(&chain) {
                    found.push(hit);
                }
            }
        }
        self.stack.lock().unwrap().pop();
        if !pending_before {
            self.hard_error.lock().unwrap().take();
        }
        let preferred = expr.and_then(|e| {
            let e = e.trim();
            found
                .iter()
                .position(|(text, _)| e.contains(text.as_str()) || text.contains(e))
        });
        let i = preferred.unwrap_or(0);
        (i < found.len()).then(|| found.swap_remove(i))
    }

    fn eval_expr(&self, expr: &str) -> Option<Value> {
        let root = Value::from_object(Scope {
            inner: self.me.clone(),
        });
        let v = self.env.compile_expression(expr).ok()?.eval(root).ok()?;
        (!v.is_undefined()).then_some(v)
    }

    fn follow_chain(&self, chain: &Chain<'_>) -> Option<(String, MissingKey)> {
        let mut value = self.eval_expr(chain.base)?;
        let mut text = chain.base.to_string();
        for access in &chain.accesses {
            let (key, key_expr) = match access {
                Access::Attr(name) => (Value::from(*name), format!(".{name}")),
                Access::Index(expr) => (self.eval_expr(expr)?, expr.trim().to_string()),
            };
            let next = value.get_item(&key).ok().filter(|v| !v.is_undefined());
            let next = match (&next, access) {
                (None, Access::Attr(name)) => {
                    value.get_attr(name).ok().filter(|v| !v.is_undefined())
                }
                _ => next,
            };
            let Some(next) = next else {
                let keys: Vec<String> = match value.kind() {
                    minijinja::value::ValueKind::Map => {
                        value.try_iter().ok()?.map(|k| python_repr(&k)).collect()
                    }
                    minijinja::value::ValueKind::Seq => (0..value.len().unwrap_or(0))
                        .map(|i| i.to_string())
                        .collect(),
                    _ => return None,
                };
                let missing = MissingKey {
                    mapping: text.clone(),
                    key_expr,
                    key: python_repr(&key),
                    keys,
                };
                text.push_str(&access.written());
                return Some((text, missing));
            };
            text.push_str(&access.written());
            value = next;
        }
        None
    }
}

/// A value as Python writes it in a message: strings quoted, numbers bare.
fn python_repr(v: &Value) -> String {
    match v.as_str() {
        Some(s) => format!("'{s}'"),
        None => v.to_string(),
    }
}

/// The insides of the `{{ }}` and `{% %}` blocks of a template.
fn template_blocks(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find(['{']) {
        let after = &rest[start..];
        let close = if after.starts_with("{{") {
            "}}"
        } else if after.starts_with("{%") {
            "%}"
        } else {
            rest = &rest[start + 1..];
            continue;
        };
        let body = &after[2..];
        let end = body.find(close).unwrap_or(body.len());
        out.push(&body[..end]);
        rest = &body[(end + 2).min(body.len())..];
    }
    out
}

enum Access<'a> {
    Attr(&'a str),
    Index(&'a str),
}

impl Access<'_> {
    fn written(&self) -> String {
        match self {
            Access::Attr(n) => format!(".{n}"),
            Access::Index(e) => format!("[{}]", e.trim()),
        }
    }
}

/// `base` followed by at least one `.attr` or `[expr]`.
struct Chain<'a> {
    base: &'a str,
    accesses: Vec<Access<'a>>,
    /// Followed by `| default`, `| d`, `is defined` or `is not defined`: a missing key there is
    /// expected.
    guarded: bool,
}

/// The subscript chains of a block of Jinja code, outside string literals. A method call ends
/// a chain before the method (`a.b.keys()` is the chain `a.b`).
fn subscript_chains(code: &str) -> Vec<Chain<'_>> {
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ident_end = |mut i: usize| {
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\'' || b == b'"' {
            i = skip_string(bytes, i);
            continue;
        }
        if !(b.is_ascii_alphabetic() || b == b'_')
            || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b'.'))
        {
            i += 1;
            continue;
        }
        let base_end = ident_end(i);
        let base = &code[i..base_end];
        let mut accesses = Vec::new();
        let mut j = base_end;
        loop {
            if j < bytes.len()
                && bytes[j] == b'.'
                && j + 1 < bytes.len()
                && (bytes[j + 1].is_ascii_alphabetic() || bytes[j + 1] == b'_')
            {
                let end = ident_end(j + 1);
                if end < bytes.len() && bytes[end] == b'(' {
                    break;
                }
                accesses.push(Access::Attr(&code[j + 1..end]));
                j = end;
            } else if j < bytes.len() && bytes[j] == b'[' {
                let Some(close) = matching_bracket(bytes, j) else {
                    break;
                };
                accesses.push(Access::Index(&code[j + 1..close]));
                j = close + 1;
            } else {
                break;
            }
        }
        if !accesses.is_empty() {
            let after = code[j..].trim_start();
            let guarded = after
                .strip_prefix('|')
                .map(|f| {
                    let f = f.trim_start();
                    let name_end = f
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(f.len());
                    matches!(&f[..name_end], "default" | "d")
                })
                .unwrap_or(false)
                || after.starts_with("is defined")
                || after.starts_with("is not defined")
                || after.starts_with("is undefined");
            out.push(Chain {
                base,
                accesses,
                guarded,
            });
        }
        i = j.max(base_end);
    }
    out
}

/// The index after the string literal starting at `start`.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            q if q == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The `]` closing the `[` at `open`, outside string literals.
fn matching_bracket(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                i = skip_string(bytes, i);
                continue;
            }
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Why a template could not produce a value, before it is tied to its variable.
enum Pending {
    Engine {
        error: minijinja::Error,
        template: String,
    },
    UndefinedResult {
        template: String,
    },
}

impl Pending {
    fn engine(error: minijinja::Error, template: &str) -> Self {
        Pending::Engine {
            error,
            template: template.to_string(),
        }
    }
    fn engine_plain(error: minijinja::Error) -> Self {
        Pending::Engine {
            error,
            template: String::new(),
        }
    }
}

fn engine_message(e: &minijinja::Error) -> String {
    let mut msg = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let (Some(src), Some(r)) = (e.template_source(), e.range())
        && let Some(at) = src.get(r)
    {
        msg.push_str(&format!(" (at `{}`)", at.trim()));
    }
    msg
}

/// Whether `expr` mentions `name` as a whole identifier.
fn mentions(expr: &str, name: &str) -> bool {
    let bytes = expr.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut start = 0;
    while let Some(pos) = expr[start..].find(name) {
        let at = start + pos;
        let end = at + name.len();
        let before_ok = at == 0 || !is_ident(bytes[at - 1]);
        let after_ok = end == bytes.len() || !is_ident(bytes[end]);
        if before_ok && after_ok {
            return true;
        }
        start = at + 1;
    }
    false
}

/// Doubles the backslashes inside string literals of `{{ … }}` blocks, as Ansible does before
/// handing a template to Jinja: YAML already unescaped them once, so `'\\1'` written in a
/// double-quoted YAML string reaches `regex_replace` as the group reference `\1`.
pub(crate) fn escape_backslashes(source: &str) -> String {
    if !source.contains('\\') {
        return source.to_string();
    }
    let mut out = String::with_capacity(source.len() + 8);
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find("}}").map(|e| e + 2).unwrap_or(rest.len());
        let block = &rest[..end];
        let mut quote: Option<char> = None;
        let mut chars = block.chars().peekable();
        while let Some(c) = chars.next() {
            match (quote, c) {
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), _) if c == q => quote = None,
                (Some(q), '\\') => {
                    if chars.peek() == Some(&q) {
                        out.push('\\');
                        out.push(q);
                        chars.next();
                        continue;
                    }
                    out.push('\\');
                }
                _ => {}
            }
            out.push(c);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

pub(crate) fn has_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// The expression of a string that is exactly one `{{ … }}` (Ansible evaluates those to a
/// native value).
pub(crate) fn single_expression(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") || inner.contains("{#")
    {
        return None;
    }
    Some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::Precedence;
    use std::path::Path;

    fn eval(yaml: &str) -> Evaluator {
        let mut set = VarSet::new();
        set.load_str(yaml, Path::new("defaults.yml"), Precedence::RoleDefaults)
            .unwrap();
        Evaluator::new(set)
    }

    #[test]
    fn renders_lazily_and_natively() {
        let e = eval(
            "a: \"{{ b }}-x\"\nb: \"{{ c | lower }}\"\nc: ABC\nn: \"{{ 1 + 2 }}\"\nt: \"{{ c == 'ABC' }}\"\nl: \"{{ [c, 'd'] }}\"\n",
        );
        assert_eq!(e.var("a").unwrap(), Value::from("abc-x"));
        assert_eq!(e.var("n").unwrap(), Value::from(3));
        assert_eq!(e.var("t").unwrap(), Value::from(true));
        assert_eq!(e.var("l").unwrap().len(), Some(2));
    }

    #[test]
    fn undefined_names_variable_and_chain() {
        let e = eval("a: \"x{{ b }}\"\nb: \"{{ c }}\"\nc: \"{{ missing_var | lower }}\"\n");
        let err = e.var("a").unwrap_err();
        match &err {
            EvalError::Undefined { name, chain, .. } => {
                assert_eq!(name, "missing_var");
                let vars: Vec<&str> = chain.iter().map(|l| l.var.as_str()).collect();
                assert_eq!(vars, ["a", "b", "c"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("`missing_var` is undefined"), "{text}");
        assert!(text.contains("needed by `c` (defaults.yml:3:"), "{text}");
    }

    #[test]
    fn default_and_is_defined_see_through_nested_undefined() {
        let e = eval(
            "a: \"{{ b | default('fallback') }}\"\nb: \"{{ nope }}\"\nc: \"{{ b is defined }}\"\nd: \"{{ zz is not defined }}\"\n",
        );
        assert_eq!(e.var("a").unwrap(), Value::from("fallback"));
        assert_eq!(e.var("c").unwrap(), Value::from(false));
        assert_eq!(e.var("d").unwrap(), Value::from(true));
    }

    #[test]
    fn printing_undefined_is_an_error_not_empty() {
        let e = eval("a: \"x-{{ nope }}-y\"\n");
        assert_eq!(e.var("a").unwrap_err().undefined_name(), Some("nope"));
    }

    #[test]
    fn syntax_errors_are_hard_even_under_default() {
        let e = eval("a: \"{{ b | default('x') }}\"\nb: \"{{ oops( }}\"\n");
        let err = e.var("a").unwrap_err();
        assert!(
            matches!(err, EvalError::Syntax { ref var, .. } if var == "b"),
            "{err:?}"
        );
        assert!(err.to_string().contains("defaults.yml:2:"), "{err}");
    }

    #[test]
    fn recursion_is_reported() {
        let e = eval("a: \"{{ b }}\"\nb: \"{{ a }}\"\n");
        assert!(matches!(
            e.var("a").unwrap_err(),
            EvalError::Recursion { .. }
        ));
    }

    #[test]
    fn missing_dict_key_is_undefined_naming_the_expression() {
        let e = eval("m:\n  x: 1\nk: y\na: \"{{ m[k] }}\"\n");
        let err = e.var("a").unwrap_err();
        assert_eq!(err.undefined_name(), Some("m[k]"), "{err}");
    }

    #[test]
    fn missing_key_names_mapping_key_and_keys() {
        let e = eval(
            "versions:\n  '1.31': a\n  '1.32': b\nmajor: \"{{ kube_version | regex_replace('^v?([0-9]+\\\\.[0-9]+).*', '\\\\1') }}\"\nkube_version: 9.9.9\n\
             v: \"{{ versions[major] }}\"\nurl: \"x/{{ v }}\"\n\
             sums: {amd64: {'1.0': s}}\narch: arm64\nnested: \"{{ sums[arch]['1.0'] | lower }}\"\n\
             guarded: \"{{ sums['x'] | default('') }}-{{ versions.nope }}\"\n",
        );
        let err = e.var("url").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("`versions` has no key '9.9' (in `versions[major]`)"),
            "{text}"
        );
        assert!(text.contains("its keys: '1.31', '1.32'"), "{text}");
        assert!(text.contains("needed by `v` (defaults.yml:"), "{text}");
        assert!(text.contains("needed by `url` (defaults.yml:"), "{text}");
        assert!(
            text.contains("the key comes from `major` ('9.9')"),
            "{text}"
        );
        let text = e.var("nested").unwrap_err().to_string();
        assert!(text.starts_with("`sums` has no key 'arm64'"), "{text}");
        assert!(text.contains("its keys: 'amd64'"), "{text}");
        // A key under `default` is expected to be missing; the unguarded one is the cause.
        let text = e.var("guarded").unwrap_err().to_string();
        assert!(text.starts_with("`versions` has no key 'nope'"), "{text}");
    }

    #[test]
    fn backslashes_in_expression_strings_are_doubled() {
        assert_eq!(
            escape_backslashes(r"{{ x | f('a\1') }} \n"),
            r"{{ x | f('a\\1') }} \n"
        );
        assert_eq!(escape_backslashes(r"{{ 'it\'s' }}"), r"{{ 'it\'s' }}");
    }

    #[test]
    fn single_expression_detection() {
        assert_eq!(single_expression("{{ a }}"), Some(" a "));
        assert_eq!(single_expression("{{ a }}{{ b }}"), None);
        assert_eq!(single_expression("x{{ a }}"), None);
        assert!(mentions("foo | lower", "foo"));
        assert!(!mentions("foobar", "foo"));
    }
}
