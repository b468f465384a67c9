//! Rollback for ADD: each step that changed something pushes how to take it back; if the
//! ADD fails before [`Undo::commit`], dropping the list runs those steps newest first, so
//! no link, address, route or IP reservation of a failed ADD survives.

/// One compensating step.
type Step = Box<dyn FnOnce() -> anyhow::Result<()>>;

/// A list of compensating steps, run in reverse on drop unless committed.
#[derive(Default)]
#[must_use = "an Undo that is dropped at once rolls back at once"]
pub struct Undo {
    steps: Vec<(String, Step)>,
}

impl Undo {
    pub fn new() -> Undo {
        Undo::default()
    }

    /// Remember how to take back a step that just succeeded.
    pub fn push(&mut self, description: impl Into<String>, step: impl FnOnce() -> anyhow::Result<()> + 'static) {
        self.steps.push((description.into(), Box::new(step)));
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The ADD succeeded: keep everything.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Roll back now (newest first). A failing step is reported on stderr and the rest still
    /// run: the error that caused the rollback is the one the caller returns.
    pub fn rollback(&mut self) {
        while let Some((what, step)) = self.steps.pop() {
            if let Err(e) = step() {
                eprintln!("rollback: {what}: {e:#}");
            }
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        self.rollback();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn runs_in_reverse_on_drop_and_survives_failures() {
        let log = Rc::new(RefCell::new(Vec::new()));
        {
            let mut u = Undo::new();
            for i in 0..3 {
                let l = log.clone();
                u.push(format!("step {i}"), move || {
                    l.borrow_mut().push(i);
                    if i == 1 {
                        anyhow::bail!("cannot");
                    }
                    Ok(())
                });
            }
            assert_eq!(u.len(), 3);
        }
        assert_eq!(*log.borrow(), vec![2, 1, 0]);
    }

    #[test]
    fn commit_forgets() {
        let log = Rc::new(RefCell::new(0));
        let mut u = Undo::new();
        let l = log.clone();
        u.push("x", move || {
            *l.borrow_mut() += 1;
            Ok(())
        });
        u.commit();
        assert_eq!(*log.borrow(), 0);
    }
}
