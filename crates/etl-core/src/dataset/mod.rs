//! Datasets: the kinds of document the pipeline knows, each declared by a
//! folder `datasets/<name>/` holding `schema.json` (JSON Schema 2020-12)
//! and `mapping.json` (see docs/datasets.md). The project's own are
//! embedded; a folder of more can be added at start.

mod mapping;

pub use mapping::{Child, Column, ColumnType, Mapping, PipelineColumns, UnknownFields};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ConfigError, Env};

/// The datasets built into the binaries: (name, schema, mapping).
const EMBEDDED: [(&str, &str, &str); 2] = [
    (
        "companies",
        include_str!("../../../../datasets/companies/schema.json"),
        include_str!("../../../../datasets/companies/mapping.json"),
    ),
    (
        "employees",
        include_str!("../../../../datasets/employees/schema.json"),
        include_str!("../../../../datasets/employees/mapping.json"),
    ),
];

/// A dataset's name, `[a-z][a-z0-9_-]{0,62}`: safe as a URL segment, an
/// S3 key segment and a metric label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct DatasetName(String);

impl TryFrom<String> for DatasetName {
    type Error = DatasetError;

    fn try_from(name: String) -> Result<Self, DatasetError> {
        Self::parse(&name)
    }
}

impl From<DatasetName> for String {
    fn from(name: DatasetName) -> String {
        name.0
    }
}

impl DatasetName {
    pub fn parse(name: &str) -> Result<Self, DatasetError> {
        let mut chars = name.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            && name.len() <= 63;
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(DatasetError::Name(name.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Looked up by any text (a name in a URL, in an event): ordered as its
/// text, so the map's order is the same.
impl std::borrow::Borrow<str> for DatasetName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset name {0:?} is not [a-z][a-z0-9_-]{{0,62}}")]
    Name(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
}

/// One dataset: its schema as written (the api serves it, the processor
/// compiles it) and its mapping.
#[derive(Debug)]
pub struct Dataset {
    pub name: DatasetName,
    pub schema: Value,
    pub mapping: Mapping,
}

impl Dataset {
    /// Reads a dataset from its two texts; `origin` names where they came
    /// from in errors (`datasets/companies`).
    pub fn from_texts(
        name: DatasetName,
        origin: &str,
        schema: &str,
        mapping: &str,
    ) -> Result<Self, DatasetError> {
        let invalid = |file: &str, problem: String| DatasetError::Invalid {
            path: format!("{origin}/{file}"),
            problem,
        };
        let schema: Value = serde_json::from_str(schema)
            .map_err(|e| invalid("schema.json", format!("not JSON: {e}")))?;
        if !schema.is_object() {
            return Err(invalid("schema.json", "a schema is a JSON object".into()));
        }
        let mapping: Mapping =
            serde_json::from_str(mapping).map_err(|e| invalid("mapping.json", e.to_string()))?;
        let problems = mapping.problems();
        if !problems.is_empty() {
            return Err(invalid("mapping.json", problems.join("; ")));
        }
        Ok(Self {
            name,
            schema,
            mapping,
        })
    }

    /// Reads `dir` (`…/<name>/`): its name is the folder's.
    pub fn from_dir(dir: &Path) -> Result<Self, DatasetError> {
        let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let name = DatasetName::parse(folder)?;
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|source| DatasetError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let origin = dir.display().to_string();
        Self::from_texts(name, &origin, &read("schema.json")?, &read("mapping.json")?)
    }
}

/// Every dataset the services know, by name.
#[derive(Debug, Clone)]
pub struct Datasets(Arc<BTreeMap<DatasetName, Arc<Dataset>>>);

impl Datasets {
    /// The embedded datasets, then each folder of `dir` (one named like an
    /// embedded dataset replaces it).
    pub fn load(dir: Option<&Path>) -> Result<Self, DatasetError> {
        let mut all = BTreeMap::new();
        for (name, schema, mapping) in EMBEDDED {
            let name = DatasetName::parse(name)?;
            let origin = format!("datasets/{name}");
            let dataset = Dataset::from_texts(name.clone(), &origin, schema, mapping)?;
            all.insert(name, Arc::new(dataset));
        }
        if let Some(dir) = dir {
            for dataset in read_folder(dir)? {
                all.insert(dataset.name.clone(), Arc::new(dataset));
            }
        }
        Ok(Self(Arc::new(all)))
    }

    /// The built-in datasets and those of `DATASETS_DIR`, when set.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let dir = env.string("DATASETS_DIR", "");
        let dir = (!dir.trim().is_empty()).then(|| Path::new(&dir));
        Self::load(dir).map_err(|e| ConfigError {
            var: "DATASETS_DIR".into(),
            problem: e.to_string(),
        })
    }

    /// Exactly these datasets (tests that declare their own).
    pub fn from_datasets(datasets: impl IntoIterator<Item = Dataset>) -> Self {
        let all = datasets
            .into_iter()
            .map(|d| (d.name.clone(), Arc::new(d)))
            .collect();
        Self(Arc::new(all))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Dataset>> {
        self.0.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(DatasetName::as_str).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Dataset>> {
        self.0.values()
    }
}

/// Each sub-folder of `dir` is a dataset; files beside them are ignored.
fn read_folder(dir: &Path) -> Result<Vec<Dataset>, DatasetError> {
    let read_error = |source| DatasetError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut folders: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    folders.retain(|p| p.is_dir());
    folders.sort();
    folders.iter().map(|p| Dataset::from_dir(p)).collect()
}

#[cfg(test)]
mod tests;
