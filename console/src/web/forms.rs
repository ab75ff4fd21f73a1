//! Posted forms: their fields as sent, and the errors shown beside them.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::Serialize;
use tasknode_protocol::FieldError;

use super::WebError;
use crate::app::AppState;
use crate::service::ServiceError;

/// The fields of a posted `application/x-www-form-urlencoded` form. A field sent twice keeps
/// its last value; a missing field reads as empty, so a required field names itself in its
/// error ("must not be empty") like any other bad value.
#[derive(Debug, Default)]
pub struct Fields(BTreeMap<String, String>);

impl Fields {
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    /// A field with surrounding white space removed.
    pub fn trimmed(&self, name: &str) -> &str {
        self.get(name).trim()
    }

    /// The values to fill a form in again with, without the CSRF token.
    pub fn values(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter(|(k, _)| k.as_str() != "csrf")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl FromRequest<AppState> for Fields {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, WebError> {
        let axum::Form(pairs) = axum::Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map_err(|e| WebError::Page {
                status: e.status(),
                message: format!("the form could not be read: {}", e.body_text()),
            })?;
        Ok(Fields(pairs.into_iter().collect()))
    }
}

/// Errors of one form: a message per field, and one for the form as a whole.
#[derive(Debug, Default, Serialize)]
pub struct FormErrors {
    pub fields: BTreeMap<String, String>,
    pub form: Option<String>,
    #[serde(skip)]
    pub status: Option<StatusCode>,
}

impl FormErrors {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.form.is_none()
    }

    /// Records `e` beside its field, if the form has that field.
    pub fn field(&mut self, e: FieldError) {
        self.fields.entry(e.field).or_insert(e.message);
        self.status.get_or_insert(StatusCode::BAD_REQUEST);
    }

    /// Records what the service layer refused: beside the field it names when the form has it
    /// (`known`), else for the whole form.
    pub fn refused(&mut self, e: ServiceError, known: &[&str]) {
        self.status = Some(super::status(&e));
        match e.field().filter(|f| known.contains(&f.as_str())) {
            Some(f) => {
                self.fields.insert(f, e.to_string());
            }
            None => self.form = Some(e.to_string()),
        }
    }

    /// The status of a page showing this form: 200 without errors, else what refused it.
    pub fn page_status(&self) -> StatusCode {
        if self.is_empty() {
            StatusCode::OK
        } else {
            self.status.unwrap_or(StatusCode::BAD_REQUEST)
        }
    }
}

/// A whole number typed into field `field`, within `range`; empty is `None`.
pub fn number(
    field: &str,
    text: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, FieldError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(FieldError::new(
            field,
            format!(
                "{} is not a whole number from {} to {}",
                tasknode_protocol::validate::show(text),
                range.start(),
                range.end()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_name_their_field_and_range() {
        assert_eq!(number("n", " 12 ", 1..=256), Ok(Some(12)));
        assert_eq!(number("n", "", 1..=256), Ok(None));
        for bad in ["0", "257", "-1", "1.5", "x"] {
            let e = number("max_concurrency", bad, 1..=256).unwrap_err();
            assert_eq!(e.field, "max_concurrency");
            assert!(e.message.contains("from 1 to 256"), "{}", e.message);
        }
    }
}
