-- Per dataset and configuration: queries kept and dropped, negatives relabeled, filtered and kept,
-- and the rates over all original negatives (as core/refine.py summary() counts them).
with queries as (
    select
        dataset,
        config,
        query_id,
        bool_and(query_kept) as kept,
        any_value(query_note) as note
    from {{ ref('stg_relabel_decisions') }}
    group by all
),

per_config_queries as (
    select
        dataset,
        config,
        count(*) as queries,
        count(*) filter (where kept) as queries_kept,
        count(*) filter (where not kept) as queries_dropped,
        count(*) filter (where note = 'invalid_ranking') as invalid_rankings,
        count(*) filter (where note = 'no_negatives_left') as left_without_negatives,
        count(*) filter (where note = 'backfilled') as backfilled
    from queries
    group by all
),

per_config_candidates as (
    select
        dataset,
        config,
        count(*) as candidates,
        count(*) filter (where original_label = 'positive') as positives,
        count(*) filter (where original_label = 'negative') as negatives,
        count(*) filter (where decision = 'relabel_positive') as relabeled,
        count(*) filter (where decision = 'filter_ambiguous') as filtered,
        count(*) filter (where decision = 'keep_negative') as kept_negatives,
        count(*) filter (where query_kept and decision in ('keep_positive', 'relabel_positive')) as training_positives,
        count(*) filter (where query_kept and decision = 'keep_negative') as training_negatives
    from {{ ref('stg_relabel_decisions') }}
    group by all
)

select
    dataset,
    config,
    q.queries,
    q.queries_kept,
    q.queries_dropped,
    q.invalid_rankings,
    q.left_without_negatives,
    q.backfilled,
    c.candidates,
    c.positives,
    c.negatives,
    c.relabeled,
    c.filtered,
    c.kept_negatives,
    c.training_positives,
    c.training_negatives,
    c.relabeled / nullif(c.negatives, 0) as relabel_rate,
    c.filtered / nullif(c.negatives, 0) as filter_rate
from per_config_queries as q
join per_config_candidates as c using (dataset, config)
order by dataset, config
