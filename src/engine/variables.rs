//! Variables: `$var.job.NAME` and `$var.TASKID.NAME` in a task's incoming values, resolved
//! when the task starts, and the job variables a task's outgoing values are written to.
