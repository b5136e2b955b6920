-- One view over every dataset partition of the lake table refine_summary (core/refine.py summary()).
select * from {{ lake_table('refine_summary') }}
