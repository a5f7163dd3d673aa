//! The Ansible side of the Jinja engine: the filters, tests and lookups that kubespray's variable
//! files use, with Ansible's semantics, on top of minijinja's Jinja2 builtins.
//!
//! Filters that only make sense on a cluster host (`ipaddr` and friends) are registered as clear
//! errors: kubespray's download lists never need them, and a list that does is better told which
//! variable to set with `-e` than given a guess.

use std::sync::Weak;

use indexmap::IndexMap;
use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, Value};

use super::eval::Inner;
use super::version::version_test;

/// Registers everything on `env`; `inner` resolves `lookup('vars', …)`.
pub(crate) fn register(env: &mut Environment<'static>, inner: Weak<Inner>) {
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(python_formatter);

    env.add_filter("bool", to_bool);
    env.add_filter("regex_replace", regex_replace);
    env.add_filter("regex_search", regex_search);
    env.add_filter("regex_findall", regex_findall);
    env.add_filter("regex_escape", |s: String| regex::escape(&s));
    env.add_filter("combine", combine);
    env.add_filter("dict2items", dict2items);
    env.add_filter("items2dict", items2dict);
    env.add_filter("ternary", ternary);
    env.add_filter("mandatory", mandatory);
    env.add_filter("to_json", |v: Value| {
        serde_json::to_string(&v).map_err(json_err)
    });
    env.add_filter("to_nice_json", |v: Value| {
        serde_json::to_string_pretty(&v).map_err(json_err)
    });
    env.add_filter("from_json", |s: String| {
        serde_json::from_str::<Value>(&s).map_err(json_err)
    });
    env.add_filter("flatten", flatten);
    env.add_filter("difference", |a: Vec<Value>, b: Vec<Value>| -> Vec<Value> {
        unique(a.into_iter().filter(|x| !b.contains(x)))
    });
    env.add_filter("intersect", |a: Vec<Value>, b: Vec<Value>| -> Vec<Value> {
        unique(a.into_iter().filter(|x| b.contains(x)))
    });
    env.add_filter("union", |a: Vec<Value>, b: Vec<Value>| -> Vec<Value> {
        unique(a.into_iter().chain(b))
    });
    env.add_filter("basename", |s: String| {
        s.rsplit('/').next().unwrap_or("").to_string()
    });
    env.add_filter("dirname", |s: String| match s.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => s[..i].to_string(),
        None => String::new(),
    });
    env.add_filter("type_debug", |v: Value| python_type_name(&v).to_string());
    for name in [
        "ipaddr",
        "ipwrap",
        "ipv4",
        "ipv6",
        "ipmath",
        "ansible.utils.ipaddr",
        "ansible.utils.ipwrap",
    ] {
        env.add_filter(name, move |_: Value, _: Rest<Value>| -> Result<Value, Error> {
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "filter `{name}` (ansible.utils, network addresses) is not supported by kpbuild: \
                     it only matters on cluster hosts; set the variable that needs it with -e"
                ),
            ))
        });
    }

    env.add_test("version", version);
    env.add_test("version_compare", version);
    env.add_test(
        "match",
        |s: String, pattern: String, kwargs: Kwargs| -> Result<bool, Error> {
            let re = build_regex(&format!("^(?:{pattern})"), &kwargs)?;
            Ok(re.is_match(&s))
        },
    );
    env.add_test(
        "search",
        |s: String, pattern: String, kwargs: Kwargs| -> Result<bool, Error> {
            Ok(build_regex(&pattern, &kwargs)?.is_match(&s))
        },
    );
    env.add_test(
        "regex",
        |s: String, pattern: String, kwargs: Kwargs| -> Result<bool, Error> {
            Ok(build_regex(&pattern, &kwargs)?.is_match(&s))
        },
    );
    env.add_test("truthy", |v: Value| v.is_true());
    env.add_test("falsy", |v: Value| !v.is_true());
    env.add_test("subset", |a: Vec<Value>, b: Vec<Value>| {
        a.iter().all(|x| b.contains(x))
    });
    env.add_test("superset", |a: Vec<Value>, b: Vec<Value>| {
        b.iter().all(|x| a.contains(x))
    });
    env.add_test("contains", |a: Vec<Value>, x: Value| a.contains(&x));

    let for_lookup = inner.clone();
    env.add_function(
        "lookup",
        move |plugin: String, terms: Rest<Value>, kwargs: Kwargs| {
            let values = run_lookup(&for_lookup, &plugin, &terms, &kwargs)?;
            let wantlist: Option<bool> = kwargs.get("wantlist")?;
            kwargs.assert_all_used()?;
            Ok(if wantlist.unwrap_or(false) {
                Value::from(values)
            } else if values.len() == 1 {
                values.into_iter().next().unwrap_or_default()
            } else {
                Value::from(
                    values
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                )
            })
        },
    );
    for name in ["query", "q"] {
        let for_query = inner.clone();
        env.add_function(
            name,
            move |plugin: String, terms: Rest<Value>, kwargs: Kwargs| {
                let values = run_lookup(&for_query, &plugin, &terms, &kwargs)?;
                kwargs.assert_all_used()?;
                Ok(Value::from(values))
            },
        );
    }
}

/// Prints values as Python's `str()` does where it differs from minijinja: `True`, `False`,
/// `None`.
fn python_formatter(
    out: &mut minijinja::Output,
    state: &mut State,
    value: &Value,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Bool => {
            let s = if value.is_true() { "True" } else { "False" };
            out.write_str(s)
                .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
        }
        ValueKind::None => out
            .write_str("None")
            .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string())),
        _ => minijinja::escape_formatter(out, state, value),
    }
}

fn python_type_name(v: &Value) -> &'static str {
    match v.kind() {
        ValueKind::Bool => "bool",
        ValueKind::Number if v.is_integer() => "int",
        ValueKind::Number => "float",
        ValueKind::String => "str",
        ValueKind::Seq => "list",
        ValueKind::Map => "dict",
        ValueKind::None => "NoneType",
        _ => "object",
    }
}

fn json_err(e: serde_json::Error) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("JSON: {e}"))
}

/// Ansible's `bool` filter: `yes`, `on`, `1`, `true` (any case) and `1` are true; the rest false.
fn to_bool(v: Value) -> bool {
    match v.kind() {
        ValueKind::Bool => v.is_true(),
        ValueKind::None | ValueKind::Undefined => false,
        ValueKind::Number => v.as_i64() == Some(1) || v.to_string() == "1.0",
        _ => match v.as_str() {
            Some(s) => matches!(s.to_ascii_lowercase().as_str(), "yes" | "on" | "1" | "true"),
            None => false,
        },
    }
}

fn build_regex(pattern: &str, kwargs: &Kwargs) -> Result<regex::Regex, Error> {
    let ignorecase: Option<bool> = kwargs.get("ignorecase")?;
    let multiline: Option<bool> = kwargs.get("multiline")?;
    kwargs.assert_all_used()?;
    regex::RegexBuilder::new(pattern)
        .case_insensitive(ignorecase.unwrap_or(false))
        .multi_line(multiline.unwrap_or(false))
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("regular expression `{pattern}` is not supported: {e} (kpbuild uses Rust's regex syntax: no look-around or back-references)"),
            )
        })
}

/// Python replacement syntax (`\1`, `\g<1>`, `\g<name>`) to the regex crate's (`${1}`).
fn python_replacement(rep: &str) -> String {
    let mut out = String::new();
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                        n.push(d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    chars.next();
                    if chars.peek() == Some(&'<') {
                        chars.next();
                        let name: String = chars.by_ref().take_while(|&c| c != '>').collect();
                        out.push_str(&format!("${{{name}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('t') => {
                    chars.next();
                    out.push('\t');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

fn regex_replace(
    value: String,
    pattern: String,
    replacement: Option<String>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let count: Option<usize> = kwargs.get("count")?;
    let re = build_regex(&pattern, &kwargs)?;
    let rep = python_replacement(&replacement.unwrap_or_default());
    Ok(re
        .replacen(&value, count.unwrap_or(0), rep.as_str())
        .into_owned())
}

fn regex_search(
    value: String,
    pattern: String,
    groups: Rest<String>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let re = build_regex(&pattern, &kwargs)?;
    let Some(caps) = re.captures(&value) else {
        return Ok(Value::from(()));
    };
    if groups.is_empty() {
        return Ok(Value::from(caps.get(0).map(|m| m.as_str()).unwrap_or("")));
    }
    let mut out = Vec::new();
    for g in groups.iter() {
        let m = if let Some(n) = g.strip_prefix('\\') {
            n.parse::<usize>().ok().and_then(|n| caps.get(n))
        } else if let Some(name) = g.strip_prefix("\\g<").and_then(|s| s.strip_suffix('>')) {
            caps.name(name)
        } else {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("regex_search: unknown group argument `{g}`"),
            ));
        };
        out.push(Value::from(m.map(|m| m.as_str()).unwrap_or("")));
    }
    Ok(Value::from(out))
}

fn regex_findall(value: String, pattern: String, kwargs: Kwargs) -> Result<Vec<Value>, Error> {
    let re = build_regex(&pattern, &kwargs)?;
    Ok(re
        .captures_iter(&value)
        .map(|caps| match caps.len() {
            1 => Value::from(caps.get(0).map(|m| m.as_str()).unwrap_or("")),
            2 => Value::from(caps.get(1).map(|m| m.as_str()).unwrap_or("")),
            _ => Value::from(
                (1..caps.len())
                    .map(|i| caps.get(i).map(|m| m.as_str()).unwrap_or("").to_string())
                    .collect::<Vec<_>>(),
            ),
        })
        .collect())
}

fn to_map(v: &Value, what: &str) -> Result<IndexMap<Value, Value>, Error> {
    if v.kind() != ValueKind::Map {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{what}: expected a dictionary, got {}", python_type_name(v)),
        ));
    }
    let mut out = IndexMap::new();
    for k in v.try_iter()? {
        let item = v.get_item(&k)?;
        out.insert(k, item);
    }
    Ok(out)
}

fn merge(
    base: &mut IndexMap<Value, Value>,
    other: IndexMap<Value, Value>,
    recursive: bool,
) -> Result<(), Error> {
    for (k, v) in other {
        match base.get_mut(&k) {
            Some(existing)
                if recursive && existing.kind() == ValueKind::Map && v.kind() == ValueKind::Map =>
            {
                let mut inner = to_map(existing, "combine")?;
                merge(&mut inner, to_map(&v, "combine")?, true)?;
                *existing = Value::from(inner);
            }
            _ => {
                base.insert(k, v);
            }
        }
    }
    Ok(())
}

/// `combine(dict, …, recursive=False)`: later dictionaries win.
fn combine(value: Value, others: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let recursive: Option<bool> = kwargs.get("recursive")?;
    let list_merge: Option<String> = kwargs.get("list_merge")?;
    kwargs.assert_all_used()?;
    if list_merge.as_deref().is_some_and(|m| m != "replace") {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "combine: only list_merge='replace' is supported",
        ));
    }
    let mut base = to_map(&value, "combine")?;
    for other in others.iter() {
        let maps: Vec<Value> = if other.kind() == ValueKind::Seq {
            other.try_iter()?.collect()
        } else {
            vec![other.clone()]
        };
        for m in maps {
            merge(
                &mut base,
                to_map(&m, "combine")?,
                recursive.unwrap_or(false),
            )?;
        }
    }
    Ok(Value::from(base))
}

fn dict2items(value: Value, kwargs: Kwargs) -> Result<Vec<Value>, Error> {
    let key_name: Option<String> = kwargs.get("key_name")?;
    let value_name: Option<String> = kwargs.get("value_name")?;
    kwargs.assert_all_used()?;
    let (kn, vn) = (
        key_name.unwrap_or_else(|| "key".into()),
        value_name.unwrap_or_else(|| "value".into()),
    );
    Ok(to_map(&value, "dict2items")?
        .into_iter()
        .map(|(k, v)| {
            let mut m = IndexMap::new();
            m.insert(Value::from(kn.as_str()), k);
            m.insert(Value::from(vn.as_str()), v);
            Value::from(m)
        })
        .collect())
}

fn items2dict(value: Vec<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let key_name: Option<String> = kwargs.get("key_name")?;
    let value_name: Option<String> = kwargs.get("value_name")?;
    kwargs.assert_all_used()?;
    let (kn, vn) = (
        key_name.unwrap_or_else(|| "key".into()),
        value_name.unwrap_or_else(|| "value".into()),
    );
    let mut out = IndexMap::new();
    for item in value {
        out.insert(item.get_attr(&kn)?, item.get_attr(&vn)?);
    }
    Ok(Value::from(out))
}

fn ternary(value: Value, yes: Value, no: Value, none: Option<Value>) -> Value {
    match (value.is_none(), none) {
        (true, Some(n)) => n,
        _ if value.is_true() => yes,
        _ => no,
    }
}

fn mandatory(state: &State, value: Value, msg: Option<String>) -> Result<Value, Error> {
    let _ = state;
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            msg.unwrap_or_else(|| "mandatory variable not defined".into()),
        ));
    }
    Ok(value)
}

fn flatten(value: Vec<Value>, levels: Option<usize>) -> Result<Vec<Value>, Error> {
    fn go(items: Vec<Value>, depth: Option<usize>, out: &mut Vec<Value>) -> Result<(), Error> {
        for item in items {
            if item.kind() == ValueKind::Seq && depth != Some(0) {
                go(item.try_iter()?.collect(), depth.map(|d| d - 1), out)?;
            } else if !item.is_none() {
                out.push(item);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(value, levels, &mut out)?;
    Ok(out)
}

fn unique(items: impl Iterator<Item = Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for x in items {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn version(value: Value, other: Value, args: Rest<Value>, kwargs: Kwargs) -> Result<bool, Error> {
    let operator: Option<String> = match args.first() {
        Some(op) => Some(op.to_string()),
        None => kwargs.get("operator")?,
    };
    let strict: Option<bool> = kwargs.get("strict")?;
    let version_type: Option<String> = kwargs.get("version_type")?;
    kwargs.assert_all_used()?;
    let vt = match (strict, version_type) {
        (Some(true), None) => "strict".to_string(),
        (_, Some(t)) => t,
        _ => "loose".to_string(),
    };
    version_test(
        &value.to_string(),
        &other.to_string(),
        operator.as_deref().unwrap_or("eq"),
        &vt,
    )
    .map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("version test on `{value}`: {e}"),
        )
    })
}

fn run_lookup(
    inner: &Weak<Inner>,
    plugin: &str,
    terms: &[Value],
    kwargs: &Kwargs,
) -> Result<Vec<Value>, Error> {
    match plugin {
        "vars" | "ansible.builtin.vars" => {
            let default: Option<Value> = kwargs.get("default")?;
            let inner = inner
                .upgrade()
                .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "evaluator dropped"))?;
            let mut out = Vec::new();
            for term in terms {
                let name = term.to_string();
                match inner.lookup(&name) {
                    Some(v) => out.push(v),
                    None => match &default {
                        Some(d) => out.push(d.clone()),
                        None => {
                            return Err(Error::new(
                                ErrorKind::UndefinedError,
                                format!("lookup('vars'): no variable found with this name: {name}"),
                            ));
                        }
                    },
                }
            }
            Ok(out)
        }
        "env" | "ansible.builtin.env" => {
            let default: Option<Value> = kwargs.get("default")?;
            Ok(terms
                .iter()
                .map(|t| match std::env::var(t.to_string()) {
                    Ok(v) => Value::from(v),
                    Err(_) => default.clone().unwrap_or_else(|| Value::from("")),
                })
                .collect())
        }
        other => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("lookup plugin `{other}` is not supported by kpbuild (supported: vars, env)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::vars::{Evaluator, Precedence, VarSet};
    use minijinja::Value;
    use std::path::Path;

    fn render(vars: &str, template: &str) -> Result<Value, crate::vars::EvalError> {
        let mut set = VarSet::new();
        set.load_str(vars, Path::new("t.yml"), Precedence::RoleDefaults)
            .unwrap();
        Evaluator::new(set).render_str(template, "test")
    }

    fn s(vars: &str, template: &str) -> String {
        render(vars, template).unwrap().to_string()
    }

    #[test]
    fn ansible_filters() {
        assert_eq!(
            s(
                "v: v1.20.7",
                "{{ v | regex_replace('^v([0-9])+\\.([0-9]+)\\.[0-9]+', 'v\\1.\\2') }}"
            ),
            "v1.20"
        );
        assert_eq!(s("v: 'abc'", "{{ v | regex_replace('b', '$') }}"), "a$c");
        assert_eq!(s("x: 'yes'", "{{ x | bool }}"), "True");
        assert_eq!(s("x: 'off'", "{{ x | bool }}"), "False");
        assert_eq!(s("m: {a: 1, b: 2}", "{{ (m | dict2items)[0].key }}"), "a");
        assert_eq!(
            s(
                "m: {a: 1, b: {c: 1}}",
                "{{ (m | combine({'b': {'d': 2}}, recursive=true)).b.d }}"
            ),
            "2"
        );
        assert_eq!(
            s(
                "m: {a: 1, b: {c: 1}}",
                "{{ (m | combine({'b': {'d': 2}})).b.c is defined }}"
            ),
            "False"
        );
        assert_eq!(
            s(
                "m: {'3.5.1': x, '3.6.0': y, '3.5.0': z}",
                "{{ (m.keys() | select('version', '3.6', '<'))[0] }}"
            ),
            "3.5.1"
        );
        assert_eq!(s("x: 1", "{{ lookup('vars', 'x') }}"), "1");
        assert_eq!(s("x: 1", "{{ lookup('vars', 'nope', default='d') }}"), "d");
        assert_eq!(s("x: true", "{{ x | ternary('a', 'b') }}"), "a");
        assert_eq!(
            s("x: [1, [2, [3]]]", "{{ x | flatten | join(',') }}"),
            "1,2,3"
        );
        assert_eq!(
            s("x: 'a/b/c.tgz'", "{{ x | basename }}/{{ x | dirname }}"),
            "c.tgz/a/b"
        );
        assert_eq!(s("x: 'A-b'", "{{ x | lower }}"), "a-b");
        assert_eq!(
            s(
                "x: 'v1.2.3'",
                "{{ x | regex_search('[0-9]+\\.([0-9]+)', '\\1') | first }}"
            ),
            "2"
        );
        assert_eq!(s("x: '1.32'", "{{ x is version('1.30.5', '>=') }}"), "True");
        assert_eq!(s("x: true", "{{ x }}-{{ none }}"), "True-None");
        assert_eq!(s("x: 'a,b'", "{{ x.split(',') | last }}"), "b");
    }

    #[test]
    fn lookup_vars_of_undefined_names_it() {
        let err = render("a: 1", "{{ lookup('vars', 'no' + 'pe') }}").unwrap_err();
        assert_eq!(err.undefined_name(), Some("nope"), "{err}");
    }

    #[test]
    fn unsupported_filters_say_so() {
        let err = render("x: 10.0.0.0/8", "{{ x | ipaddr('net') }}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ipaddr") && err.contains("not supported"),
            "{err}"
        );
    }
}
