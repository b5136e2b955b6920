-- LLM calls per dataset, stage and model: one row of answer_snippets is one call (per candidate),
-- one row of answerability_rankings one ranking (per query, over `windows` sliding windows).
-- Cache hits and tokens come from the columns where the stage's table has them, else null.
{%- set snippets = ref('stg_answer_snippets') %}
{%- set rankings = ref('stg_answerability_rankings') %}
{%- set statuses = ['answer', 'no_answer', 'ungrounded', 'invalid', 'ok', 'wrong_format', 'repetition', 'missing_documents'] %}

with calls as (
    {% for stage, relation in [('answer_snippets', snippets), ('answerability_rankings', rankings)] %}
    select
        dataset,
        '{{ stage }}' as stage,
        model,
        status,
        {{ column_or_null(relation, 'cached', 'boolean') }} as cached,
        {{ column_or_null(relation, 'prompt_tokens', 'bigint') }} as prompt_tokens,
        {{ column_or_null(relation, 'completion_tokens', 'bigint') }} as completion_tokens,
        {{ column_or_null(relation, 'windows', 'bigint') }} as windows
    from {{ relation }}
    {{ "union all" if not loop.last }}
    {% endfor %}
)

select
    dataset,
    stage,
    model,
    count(*) as calls,
    case when count(cached) > 0 then count(*) filter (where cached) end as cache_hits,
    case when count(cached) > 0 then (count(*) filter (where cached)) / count(cached) end as cache_hit_rate,
    sum(prompt_tokens)::bigint as prompt_tokens,
    sum(completion_tokens)::bigint as completion_tokens,
    sum(windows)::bigint as ranking_windows,
    {%- for status in statuses %}
    count(*) filter (where status = '{{ status }}') as status_{{ status }},
    {%- endfor %}
    -- every status as a map too (status_counts['answer']), statuses added later included
    histogram(status)::map(varchar, bigint) as status_counts
from calls
group by all
order by dataset, stage, model
