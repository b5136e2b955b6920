-- BEIR scores per trained model: each configuration's value, its delta against the model trained
-- on the unrelabeled set (config 'baseline'; null for the baseline itself) and its rank among the
-- models of the same dataset, evaluation dataset, split and metric (1 = best; all are higher-better).
-- Config 'base' is the untrained base model.
with scores as (
    select * from {{ ref('stg_beir_scores') }}
),

baseline as (
    select dataset, eval_dataset, split, metric, value as baseline_value
    from scores
    where config = 'baseline'
)

select
    s.dataset,
    s.eval_dataset,
    s.split,
    s.config,
    s.metric,
    s.value,
    case when s.config <> 'baseline' then s.value - b.baseline_value end as delta,
    b.baseline_value,
    rank() over (partition by s.dataset, s.eval_dataset, s.split, s.metric order by s.value desc) as rank,
    s.model_path
from scores as s
left join baseline as b using (dataset, eval_dataset, split, metric)
order by s.dataset, s.eval_dataset, s.split, s.metric, rank, s.config
