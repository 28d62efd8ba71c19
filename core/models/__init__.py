"""The domain vocabulary of ackbot: pydantic models shared by every layer, one module per job.

common       the strict base, severities, durations, UTC times, timezone names
events       events in and as stored, and the alerts they open
rules        rules, their matches and actions (throttles, digests, approvals, quiet hours)
deliveries   the outbox rows and their attempts
people       people, groups, and the actor a platform vouches for
approvals    approvals, their states and choices, and each answer

Import each name from the module that defines it.
"""
