-- How well the audited judge flags the false negatives the truth knows: per dataset, judge and
-- configuration, overall (rank_bucket 'all') and per mining-rank bucket, the confusion counts,
-- precision, recall, F1 and Cohen's kappa, as core/audit.py agreement() computes them
-- (a precision or recall with nothing to divide by is 0; kappa is 1 where both sides give one label).
with counts as (
    select
        dataset,
        judge,
        model,
        truth,
        config,
        coalesce(rank_bucket, 'all') as rank_bucket,
        min(mining_rank) as first_mining_rank,
        count(*) as candidates,
        count(*) filter (where expected) as expected,
        count(*) filter (where flagged) as flagged,
        count(*) filter (where flagged and expected) as true_positives,
        count(*) filter (where flagged and not expected) as false_positives,
        count(*) filter (where not flagged and expected) as false_negatives,
        count(*) filter (where not flagged and not expected) as true_negatives
    from {{ ref('stg_judge_audit') }}
    group by grouping sets ((dataset, judge, model, truth, config), (dataset, judge, model, truth, config, rank_bucket))
),

rates as (
    select
        *,
        coalesce(true_positives / nullif(flagged, 0), 0) as precision,
        coalesce(true_positives / nullif(expected, 0), 0) as recall,
        (true_positives + true_negatives) / candidates as observed_agreement,
        (flagged * expected + (candidates - flagged) * (candidates - expected)) / (candidates * candidates) as chance_agreement
    from counts
)

select
    * exclude (first_mining_rank, observed_agreement, chance_agreement),
    coalesce(2 * precision * recall / nullif(precision + recall, 0), 0) as f1,
    case
        when (flagged in (0, candidates)) and (expected in (0, candidates)) and flagged = expected then 1.0
        else (observed_agreement - chance_agreement) / nullif(1 - chance_agreement, 0)
    end as kappa
from rates
order by dataset, config, rank_bucket != 'all', first_mining_rank nulls last
