//! Values on their way from SQLite to PostgreSQL: each column's PostgreSQL type, the strict
//! conversion of what SQLite holds into it (nothing that would change on the way is let
//! through), the parameters COPY writes, and the canonical rendering both sides' checksums hash.

use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};
use tokio_postgres::types::{ToSql, Type};

/// The PostgreSQL type of a column, as the copy writes and reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Int8,
    Int4,
    Float8,
    Bool,
    Text,
    Bytea,
}

impl Kind {
    pub(super) fn of(data_type: &str) -> Option<Kind> {
        Some(match data_type {
            "bigint" => Kind::Int8,
            "integer" => Kind::Int4,
            "double precision" => Kind::Float8,
            "boolean" => Kind::Bool,
            "text" => Kind::Text,
            "bytea" => Kind::Bytea,
            _ => return None,
        })
    }

    pub(super) fn pg_type(self) -> Type {
        match self {
            Kind::Int8 => Type::INT8,
            Kind::Int4 => Type::INT4,
            Kind::Float8 => Type::FLOAT8,
            Kind::Bool => Type::BOOL,
            Kind::Text => Type::TEXT,
            Kind::Bytea => Type::BYTEA,
        }
    }
}

/// A value of a row, typed as the PostgreSQL column takes it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

/// SQLite's value `v` for a column of `kind`, converted only when nothing changes.
pub(super) fn from_sqlite(v: ValueRef<'_>, kind: Kind) -> Result<Value, String> {
    let found = |what: &str| format!("SQLite holds {what} where PostgreSQL takes {kind:?}");
    Ok(match (v, kind) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(i), Kind::Int8) => Value::Int(i),
        (ValueRef::Integer(i), Kind::Int4) => match i32::try_from(i) {
            Ok(_) => Value::Int(i),
            Err(_) => return Err(format!("{i} does not fit PostgreSQL's integer")),
        },
        (ValueRef::Integer(i), Kind::Bool) => match i {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            _ => return Err(format!("{i} is not a boolean (0 or 1)")),
        },
        (ValueRef::Integer(i), Kind::Float8) => {
            let f = i as f64;
            if f as i64 != i {
                return Err(format!("{i} is not exact as a double"));
            }
            Value::Float(f)
        }
        (ValueRef::Real(f), Kind::Float8) => Value::Float(f),
        (ValueRef::Text(t), Kind::Text) => match std::str::from_utf8(t) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => return Err("the text is not UTF-8".to_owned()),
        },
        (ValueRef::Blob(b), Kind::Bytea) => Value::Bytes(b.to_vec()),
        (ValueRef::Integer(_), _) => return Err(found("an integer")),
        (ValueRef::Real(_), _) => return Err(found("a real number")),
        (ValueRef::Text(_), _) => return Err(found("text")),
        (ValueRef::Blob(_), _) => return Err(found("a blob")),
    })
}

/// PostgreSQL's value in column `i` of `row`.
pub(super) fn from_postgres(
    row: &tokio_postgres::Row,
    i: usize,
    kind: Kind,
) -> Result<Value, tokio_postgres::Error> {
    Ok(match kind {
        Kind::Int8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Kind::Int4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Kind::Float8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Float),
        Kind::Bool => row.try_get::<_, Option<bool>>(i)?.map(Value::Bool),
        Kind::Text => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
        Kind::Bytea => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes),
    }
    .unwrap_or(Value::Null))
}

/// The parameter that writes `v` into a column of `kind`.
pub(super) fn param(v: &Value, kind: Kind) -> Box<dyn ToSql + Sync + Send> {
    match (v, kind) {
        (Value::Int(i), Kind::Int4) => Box::new(i32::try_from(*i).ok()),
        (Value::Int(i), _) => Box::new(*i),
        (Value::Float(f), _) => Box::new(*f),
        (Value::Bool(b), _) => Box::new(*b),
        (Value::Text(s), _) => Box::new(s.clone()),
        (Value::Bytes(b), _) => Box::new(b.clone()),
        (Value::Null, Kind::Int8) => Box::new(None::<i64>),
        (Value::Null, Kind::Int4) => Box::new(None::<i32>),
        (Value::Null, Kind::Float8) => Box::new(None::<f64>),
        (Value::Null, Kind::Bool) => Box::new(None::<bool>),
        (Value::Null, Kind::Text) => Box::new(None::<String>),
        (Value::Null, Kind::Bytea) => Box::new(None::<Vec<u8>>),
    }
}

/// A table's checksum: SHA-256 over its rows in key order, each value rendered with a tag for
/// its type and, for text and bytes, its length, so no two different tables render alike.
pub(super) struct Checksum {
    hash: Sha256,
    pub(super) rows: u64,
}

impl Checksum {
    pub(super) fn new() -> Checksum {
        Checksum {
            hash: Sha256::new(),
            rows: 0,
        }
    }

    pub(super) fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.hash.update(b"n"),
            Value::Int(i) => {
                self.hash.update(b"i");
                self.hash.update(i.to_be_bytes());
            }
            Value::Float(f) => {
                self.hash.update(b"f");
                self.hash.update(f.to_bits().to_be_bytes());
            }
            Value::Bool(b) => self.hash.update(if *b { b"b1" } else { b"b0" }),
            Value::Text(s) => {
                self.hash.update(b"t");
                self.hash.update((s.len() as u64).to_be_bytes());
                self.hash.update(s.as_bytes());
            }
            Value::Bytes(b) => {
                self.hash.update(b"x");
                self.hash.update((b.len() as u64).to_be_bytes());
                self.hash.update(b);
            }
        }
    }

    pub(super) fn end_row(&mut self) {
        self.rows += 1;
    }

    pub(super) fn finish(self) -> (u64, String) {
        (self.rows, hex::encode(self.hash.finalize()))
    }
}
