//! The OS package groups file (kubeplay's `packages.yaml` format): top-level groups that are
//! lists of package names, or mappings of nested groups (`kubespray.common`).

use std::collections::BTreeSet;

use indexmap::IndexMap;
use serde::Deserialize;

/// A group: a list of packages, or nested groups.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum Node {
    List(Vec<String>),
    Nested(IndexMap<String, Node>),
}

/// Errors reading or using a groups file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupsError {
    #[error(
        "{file}: not a package groups file: {message}\n  hint: top-level keys are groups, each a list of package names or a mapping of nested groups"
    )]
    Yaml { file: String, message: String },
    #[error("{file}: no group `{group}`; the file defines: {}", .available.join(", "))]
    UnknownGroup {
        file: String,
        group: String,
        available: Vec<String>,
    },
    #[error("{file}: group `{group}` holds nested groups; select one of: {}", .available.join(", "))]
    NotAList {
        file: String,
        group: String,
        available: Vec<String>,
    },
    #[error("{file}: group `{group}` has an empty or blank package name")]
    BadName { file: String, group: String },
}

/// A parsed groups file.
#[derive(Clone, Debug)]
pub(crate) struct Groups {
    file: String,
    root: IndexMap<String, Node>,
}

impl Groups {
    pub fn parse(file: &str, text: &str) -> Result<Groups, GroupsError> {
        let root: IndexMap<String, Node> =
            serde_saphyr::from_str(text).map_err(|e| GroupsError::Yaml {
                file: file.to_string(),
                message: e.to_string(),
            })?;
        Ok(Groups {
            file: file.to_string(),
            root,
        })
    }

    /// Every selectable group name (`common`, `kubespray.common`, …), in file order.
    pub fn names(&self) -> Vec<String> {
        fn walk(prefix: &str, map: &IndexMap<String, Node>, out: &mut Vec<String>) {
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    Node::List(_) => out.push(name),
                    Node::Nested(m) => walk(&name, m, out),
                }
            }
        }
        let mut out = Vec::new();
        walk("", &self.root, &mut out);
        out
    }

    /// The packages of one group (`kubespray.common`).
    pub fn group(&self, group: &str) -> Result<&[String], GroupsError> {
        let mut map = &self.root;
        let mut parts = group.split('.').peekable();
        while let Some(part) = parts.next() {
            let unknown = || GroupsError::UnknownGroup {
                file: self.file.clone(),
                group: group.to_string(),
                available: self.names(),
            };
            match map.get(part).ok_or_else(unknown)? {
                Node::List(list) if parts.peek().is_none() => {
                    if list.iter().any(|p| p.trim().is_empty()) {
                        return Err(GroupsError::BadName {
                            file: self.file.clone(),
                            group: group.to_string(),
                        });
                    }
                    return Ok(list);
                }
                Node::List(_) => return Err(unknown()),
                Node::Nested(m) if parts.peek().is_none() => {
                    return Err(GroupsError::NotAList {
                        file: self.file.clone(),
                        group: group.to_string(),
                        available: m.keys().map(|k| format!("{group}.{k}")).collect(),
                    });
                }
                Node::Nested(m) => map = m,
            }
        }
        unreachable!("split yields at least one part")
    }

    /// The union of several groups and extra packages, sorted and unique.
    pub fn select(&self, groups: &[String], extra: &[String]) -> Result<Vec<String>, GroupsError> {
        let mut out = BTreeSet::new();
        for g in groups {
            out.extend(self.group(g)?.iter().map(|p| p.trim().to_string()));
        }
        out.extend(extra.iter().map(|p| p.trim().to_string()));
        Ok(out.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Groups {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/os-packages/packages.kubeplay.yaml"
        );
        Groups::parse(
            "packages.kubeplay.yaml",
            &std::fs::read_to_string(path).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn kubeplay_groups_file() {
        let g = groups();
        assert!(g.names().contains(&"kubespray.common".to_string()));
        assert!(
            g.group("kubespray.apt")
                .unwrap()
                .contains(&"python-apt".to_string())
        );
        let all = g
            .select(
                &["common".into(), "apt".into(), "kubespray.common".into()],
                &["containerd".into()],
            )
            .unwrap();
        assert!(all.contains(&"rsync".to_string()) && all.contains(&"containerd".to_string()));
        assert_eq!(
            all.iter().filter(|p| *p == "rsync").count(),
            1,
            "union is unique"
        );
        assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted");
    }

    #[test]
    fn unknown_and_nested_groups_are_explained() {
        let g = groups();
        let e = g.group("kubespray.zypper").unwrap_err().to_string();
        assert!(
            e.contains("no group `kubespray.zypper`") && e.contains("kubespray.yum"),
            "{e}"
        );
        let e = g.group("kubespray").unwrap_err().to_string();
        assert!(e.contains("kubespray.common"), "{e}");
    }
}
