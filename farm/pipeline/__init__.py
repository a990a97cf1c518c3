"""One job as plain steps, driven by any shell through the `Runner` protocol.

    plan.py      consent, probe, scene cuts, shard plan, ledger     (prepare_job)
    voice.py     the voice stage as sentence units         (plan_voice_units, run_sentence)
    units.py     a worker that runs any unit of any job              (UnitWorker, schedule_units)
    storage.py   every worker's node proves it reaches the job's paths
    reduce.py    validate, join, one PCM timeline, mux, sign, audit  (reduce_job)
    report.py    the typed JobReport and its checked-in JSON schema
    progress.py  progress events and the JobStatus they add up to
    runner.py    execute_job (the one pipeline), Runner, InProcessRunner

Ray-free: ``actors/`` supplies the Ray runner, the job actor and the reducer actor.
"""
