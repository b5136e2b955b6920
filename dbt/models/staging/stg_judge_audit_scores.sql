-- One view over every dataset partition of the lake table judge_audit_scores (core/audit/scoring.py audit_scores()).
select * from {{ lake_table('judge_audit_scores') }}
