//! Several problems reported as one error, so that `wharf check`, `wharf
//! streams apply` and start-up say everything that is wrong at once
//! instead of one thing per try.

use std::fmt;

/// Every problem found, in the order found; each names its handler,
/// stream or field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems(Vec<String>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Problems {
        Problems::default()
    }

    /// Adds one problem.
    pub fn push(&mut self, problem: impl fmt::Display) {
        self.0.push(problem.to_string());
    }

    /// Adds an error: each of its problems when it is a list of them,
    /// else the error with its causes on one line.
    pub fn add(&mut self, error: anyhow::Error) {
        if let Some(list) = error.downcast_ref::<Problems>() {
            self.0.extend(list.0.iter().cloned());
        } else {
            self.0.push(format!("{error:#}"));
        }
    }

    /// Adds every problem of `other`, in order.
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Each problem, in order.
    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }

    /// `Ok` when there are none, else all of them as one error.
    pub fn into_result(self) -> anyhow::Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(anyhow::Error::new(self))
        }
    }
}

/// One problem on its own line; several as a count and a list, one per line.
impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => write!(f, "no problems"),
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} problems:", all.len())?;
                for p in all {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Problems {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_problem_is_one_line_and_several_are_a_list() {
        let mut p = Problems::new();
        p.push("handler \"a\": field `memory`: too small");
        assert_eq!(p.to_string(), "handler \"a\": field `memory`: too small");
        let mut inner = Problems::new();
        inner.push("b");
        inner.push("c");
        p.add(anyhow::Error::new(inner));
        p.add(anyhow::anyhow!("cause").context("d"));
        assert_eq!(
            p.to_string(),
            "4 problems:\n  - handler \"a\": field `memory`: too small\n  - b\n  - c\n  - d: cause"
        );
        assert!(Problems::new().into_result().is_ok());
    }
}
