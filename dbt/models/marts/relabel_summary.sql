-- Per dataset and configuration: queries kept and dropped, negatives relabeled, filtered and kept,
-- what trains, and the rates. Computed once, in Python (core/refine.py summary(), the lake table
-- refine_summary): the relabel-rate check, the UI and this mart show the same figures.
select * from {{ ref('stg_refine_summary') }}
order by dataset, config
