-- How well the audited judge flags the false negatives the truth knows: per dataset, judge and
-- configuration, overall (rank_bucket 'all', with how well answer_probability alone ranks the
-- negatives) and per mining-rank bucket. Computed once, in Python (core/audit/scoring.py
-- audit_scores(), the lake table judge_audit_scores): the audit report and this mart agree by construction.
select * from {{ ref('stg_judge_audit_scores') }}
order by dataset, judge, config, rank_bucket != 'all', try_cast(regexp_extract(rank_bucket, '^[0-9]+') as integer) nulls last
