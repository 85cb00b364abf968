"""Tests of walk-forward folds, deflated Sharpe ratio, effective trials, PBO and the score."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fxresearch.validation import (
    cluster_sharpe_variance, daily_moments, deflated_sharpe_ratio, effective_number_of_trials,
    expected_max_sharpe, horizon_days, lockbox_start, probability_of_backtest_overfitting, score_column,
    walk_forward_folds, walk_forward_select,
)

# A year of trading day numbers with weekend jumps, as day_end_marks returns them.
YEAR_DAYS = np.array([d for d in range(19000, 19365) if (d + 3) % 7 < 5], dtype=np.int64)


class TestDeflatedSharpeRatio:
    def test_hand_worked_example(self):
        # SR = 0.1 per day (not annualised), T = 250 days, skew -0.5, raw kurtosis 4,
        # V = 0.0025 (Sharpe std 0.05 across trials), N = 10 trials.
        #   Phi^-1(1 - 1/10)       = Phi^-1(0.9)          = 1.2815516
        #   Phi^-1(1 - 1/(10 e))   = Phi^-1(0.9632121)    = 1.7892418
        #   E[max] = 0.05 * (0.4227843 * 1.2815516 + 0.5772157 * 1.7892418)
        #          = 0.05 * (0.5418199 + 1.0327784) = 0.0787299
        #   variance term = 1 - (-0.5)(0.1) + (4 - 1)/4 * 0.01 = 1.0575
        #   z = (0.1 - 0.0787299) * sqrt(249) / sqrt(1.0575) = 0.0212701 * 15.7797 / 1.0283482 = 0.326384
        #   DSR = Phi(0.326384) = 0.627933
        assert expected_max_sharpe(0.0025, 10) == pytest.approx(0.0787299, abs=1e-7)
        dsr = deflated_sharpe_ratio(0.1, 250, -0.5, 4.0, 0.0025, 10)
        assert dsr == pytest.approx(0.627933, abs=1e-6)

    def test_one_trial_is_probabilistic_sharpe(self):
        # N = 1: SR0 = 0. Normal returns (skew 0, kurtosis 3):
        # z = 0.1 * sqrt(99) / sqrt(1.005) = 0.994987 / 1.002497 = 0.992509, Phi(z) = 0.839525.
        assert expected_max_sharpe(0.01, 1) == 0.0
        dsr = deflated_sharpe_ratio(0.1, 100, 0.0, 3.0, 0.01, 1)
        assert dsr == pytest.approx(0.839525, abs=1e-6)

    def test_expected_max_grows_with_trials(self):
        values = [expected_max_sharpe(0.01, n) for n in (2, 5, 10, 100, 1000, 10_000)]
        assert all(later > earlier for earlier, later in itertools.pairwise(values))
        assert values[0] > 0

    def test_expected_max_scales_with_sharpe_std(self):
        assert expected_max_sharpe(0.04, 50) == pytest.approx(2 * expected_max_sharpe(0.01, 50))

    def test_more_trials_lower_dsr(self):
        few = deflated_sharpe_ratio(0.1, 250, 0.0, 3.0, 0.0025, 5)
        many = deflated_sharpe_ratio(0.1, 250, 0.0, 3.0, 0.0025, 500)
        assert many < few

    def test_negative_skew_fat_tails_lower_dsr(self):
        normal = deflated_sharpe_ratio(0.1, 250, 0.0, 3.0, 0.0025, 10)
        skewed = deflated_sharpe_ratio(0.1, 250, -2.0, 10.0, 0.0025, 10)
        assert skewed < normal

    def test_arrays_broadcast(self):
        dsr = deflated_sharpe_ratio(np.array([0.0, 0.1, np.nan]), 250, 0.0, 3.0, 0.0025, 10)
        assert dsr.shape == (3,)
        assert dsr[0] < dsr[1]
        assert math.isnan(dsr[2])

    def test_daily_moments_raw_kurtosis(self):
        rng = np.random.default_rng(0)
        rows = rng.normal(0.1, 1.0, (2, 200_000))
        sharpe, skew, kurtosis = daily_moments(rows)
        assert sharpe == pytest.approx([0.1, 0.1], abs=0.01)
        assert skew == pytest.approx([0.0, 0.0], abs=0.03)
        assert kurtosis == pytest.approx([3.0, 3.0], abs=0.05)


def assert_plan_is_clean(plan, n_days: int, purge: int, embargo: int):
    lockbox = set(plan.lockbox_columns.tolist())
    for fold in plan:
        train = fold.train_columns
        test = fold.test_columns
        assert len(set(train.tolist()) & set(test.tolist())) == 0
        # Every test day lies after the last train day plus purge and embargo.
        assert test.min() - train.max() - 1 >= purge + embargo
        assert not lockbox & set(train.tolist())
        assert not lockbox & set(test.tolist())
        assert test.max() < n_days


class TestWalkForwardFolds:
    def test_folds_leave_gap_and_lockbox(self):
        purge, embargo = horizon_days(1440), 1
        plan = walk_forward_folds(YEAR_DAYS, 5, purge, embargo, 0.15)
        assert len(plan) == 5
        assert plan.reason == ""
        assert_plan_is_clean(plan, len(YEAR_DAYS), purge, embargo)
        assert plan.gap_days == purge + embargo
        assert plan.gap_days >= horizon_days(1440)

    def test_lockbox_is_last_fraction(self):
        plan = walk_forward_folds(YEAR_DAYS, 5, 2, 1, 0.15)
        n_lockbox = math.ceil(0.15 * len(YEAR_DAYS))
        assert len(plan.lockbox_days) == n_lockbox
        assert plan.lockbox_days.tolist() == YEAR_DAYS[-n_lockbox:].tolist()
        assert lockbox_start(YEAR_DAYS, 0.15) == YEAR_DAYS[-n_lockbox]

    def test_gap_before_lockbox(self):
        plan = walk_forward_folds(YEAR_DAYS, 5, 2, 1, 0.15)
        last_test = plan[-1].test_columns.max()
        assert plan.lockbox_columns.min() - last_test - 1 >= 3

    def test_lockbox_rounding_exact(self):
        # 0.15 * 100 is 15.000000000000002 in floats: still 15 lockbox days.
        assert lockbox_start(np.arange(100), 0.15) == 85

    def test_no_lockbox(self):
        plan = walk_forward_folds(YEAR_DAYS, 3, 2, 1, 0.0)
        assert len(plan.lockbox_days) == 0
        assert plan[-1].test_columns.max() == len(YEAR_DAYS) - 1
        assert lockbox_start(YEAR_DAYS, 0.0) == YEAR_DAYS[-1] + 1

    def test_anchored_train_grows_from_start(self):
        plan = walk_forward_folds(YEAR_DAYS, 4, 2, 1, 0.15, scheme="anchored")
        lengths = [len(fold.train_columns) for fold in plan]
        assert all(fold.train_columns[0] == 0 for fold in plan)
        assert all(later > earlier for earlier, later in itertools.pairwise(lengths))
        # Each test block follows the previous one without a hole.
        for earlier, later in itertools.pairwise(plan):
            assert later.test_columns[0] == earlier.test_columns[-1] + 1

    def test_rolling_train_keeps_length(self):
        plan = walk_forward_folds(YEAR_DAYS, 4, 2, 1, 0.15, scheme="rolling")
        lengths = {len(fold.train_columns) for fold in plan}
        assert len(lengths) == 1
        assert_plan_is_clean(plan, len(YEAR_DAYS), 2, 1)

    def test_days_match_columns(self):
        plan = walk_forward_folds(YEAR_DAYS, 3, 2, 1, 0.15)
        for fold in plan:
            assert fold.train_days.tolist() == YEAR_DAYS[fold.train_columns].tolist()
            assert fold.test_days.tolist() == YEAR_DAYS[fold.test_columns].tolist()

    def test_short_data_fewer_folds_with_reason(self):
        days = YEAR_DAYS[:100]
        plan = walk_forward_folds(days, 5, 2, 1, 0.15)
        # 100 days: 15 lockbox and a 3-day gap leave 82 fold days. Three folds would test on
        # blocks of 82 // 4 = 20 days but train on 82 - 60 - 3 = 19 days; two folds test on
        # 82 // 3 = 27 days and train first on 82 - 54 - 3 = 25 days.
        assert len(plan) == 2
        assert plan.n_requested == 5
        assert "made 2 folds" in plan.reason
        assert len(plan[0].train_columns) == 25
        assert_plan_is_clean(plan, len(days), 2, 1)
        assert all(len(fold.test_columns) >= 20 for fold in plan)
        assert all(len(fold.train_columns) >= 20 for fold in plan)

    def test_three_weeks_give_no_folds(self):
        plan = walk_forward_folds(YEAR_DAYS[:15], 5, 2, 1, 0.15)
        assert len(plan) == 0
        assert "made 0 folds" in plan.reason

    def test_invalid_input_rejected(self):
        with pytest.raises(ValueError, match="strictly ascending"):
            walk_forward_folds(YEAR_DAYS[::-1], 3, 2, 1)
        with pytest.raises(ValueError, match="0 or more"):
            walk_forward_folds(YEAR_DAYS, 3, -1, 1)
        with pytest.raises(ValueError, match="scheme"):
            walk_forward_folds(YEAR_DAYS, 3, 2, 1, scheme="expanding")
        with pytest.raises(ValueError, match="lockbox_fraction"):
            walk_forward_folds(YEAR_DAYS, 3, 2, 1, 1.0)

    def test_horizon_days_rounds_up(self):
        assert horizon_days(60) == 2
        assert horizon_days(1440) == 2
        assert horizon_days(1441) == 3


class TestWalkForwardSelect:
    def test_selects_train_winner_and_records_test(self):
        rng = np.random.default_rng(5)
        matrix = rng.normal(0.0, 1.0, (20, len(YEAR_DAYS)))
        plan = walk_forward_folds(YEAR_DAYS, 4, 2, 1, 0.15)
        # Strategy 7 has an edge only on fold 2's train days.
        matrix[7, plan[2].train_columns] += 3.0
        table, equity = walk_forward_select(matrix, plan)

        assert len(table) == 4
        assert table.loc[2, "selected_strategy"] == 7
        for fold, row in zip(plan, table.itertuples(), strict=True):
            expected = matrix[row.selected_strategy, fold.test_columns]
            assert equity.loc[fold.test_days].to_numpy().tolist() == pytest.approx(expected.tolist())
            assert row.test_total_pips == pytest.approx(expected.sum())
            assert row.n_test_days == len(fold.test_columns)
        assert len(equity) == sum(len(fold.test_columns) for fold in plan)
        assert equity.index.is_monotonic_increasing

    def test_persistent_edge_wins_every_fold(self):
        rng = np.random.default_rng(6)
        matrix = rng.normal(0.0, 1.0, (30, len(YEAR_DAYS)))
        matrix[11] += 1.0
        plan = walk_forward_folds(YEAR_DAYS, 5, 2, 1, 0.15)
        table, _ = walk_forward_select(matrix, plan, metric="sortino")
        assert (table["selected_strategy"] == 11).all()
        assert (table["test_percentile"] > 0.9).all()

    def test_no_finite_score_trades_nothing(self):
        matrix = np.zeros((3, len(YEAR_DAYS)))
        plan = walk_forward_folds(YEAR_DAYS, 2, 2, 1, 0.15)
        table, equity = walk_forward_select(matrix, plan)
        assert (table["selected_strategy"] == -1).all()
        assert (equity == 0).all()

    def test_unknown_metric_rejected(self):
        plan = walk_forward_folds(YEAR_DAYS, 2, 2, 1, 0.15)
        with pytest.raises(ValueError, match="metric"):
            walk_forward_select(np.zeros((2, len(YEAR_DAYS))), plan, metric="profit")


class TestEffectiveTrials:
    def test_duplicates_count_once(self):
        rng = np.random.default_rng(1)
        base = rng.normal(0.0, 1.0, (4, 250))
        # Each of 4 independent series appears 5 times, some scaled or shifted (correlation 1).
        rows = np.vstack([base[i % 4] * (1 + i // 4) + 0.1 * (i % 3) for i in range(20)])
        trials = effective_number_of_trials(rows)
        assert trials.n_trials == 20
        assert trials.n_distinct == 4
        assert trials.n_effective == 4
        for i in range(20):
            assert trials.labels[i] == trials.labels[i % 4]

    def test_independent_count_separately(self):
        rows = np.random.default_rng(2).normal(0.0, 1.0, (30, 250))
        trials = effective_number_of_trials(rows)
        assert trials.n_effective == 30
        assert len(set(trials.labels.tolist())) == 30

    def test_correlated_family_is_one_trial(self):
        rng = np.random.default_rng(3)
        families = rng.normal(0.0, 1.0, (5, 250))
        # 8 variants per family, correlation 1 / (1 + 0.25) = 0.8 with the family series.
        family_of = np.repeat(np.arange(5), 8)
        rows = families[family_of] + rng.normal(0.0, 0.5, (40, 250))
        trials = effective_number_of_trials(rows)
        assert trials.n_effective == 5
        for family in range(5):
            assert len(set(trials.labels[family_of == family].tolist())) == 1

    def test_flat_rows_not_counted(self):
        rows = np.vstack([np.zeros(100), np.full(100, 2.0), np.random.default_rng(4).normal(0, 1, (3, 100))])
        trials = effective_number_of_trials(rows)
        assert trials.n_flat == 2
        assert trials.labels[:2].tolist() == [-1, -1]
        assert trials.n_effective == 3

    def test_sampled_path_finds_families(self):
        rng = np.random.default_rng(8)
        families = rng.normal(0.0, 1.0, (12, 200))
        family_of = rng.integers(0, 12, 600)
        rows = families[family_of] + rng.normal(0.0, 0.5, (600, 200))
        trials = effective_number_of_trials(rows, max_exact=100, random_state=3)
        assert trials.sampled
        assert trials.n_effective == 12
        for family in range(12):
            assert len(set(trials.labels[family_of == family].tolist())) == 1

    def test_nan_rejected(self):
        rows = np.ones((2, 30))
        rows[0, 3] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            effective_number_of_trials(rows)


def demeaned_noise(seed: int, n_strategies: int, n_days: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(0.0, 1.0, (n_strategies, n_days))
    return rows - rows.mean(axis=1, keepdims=True)


class TestProbabilityOfBacktestOverfitting:
    def test_noise_pbo_about_half(self):
        # Without skill the out-of-sample rank of the winner is uniform: PBO is 0.5 on
        # average, but one data set can land far from it, so average over ten.
        pbo = [probability_of_backtest_overfitting(np.random.default_rng(seed).normal(0, 1, (200, 400)), 8).pbo
               for seed in range(10)]
        assert 0.4 < np.mean(pbo) < 0.65

    def test_fitted_noise_pbo_high(self):
        # Noise with each strategy's full-sample mean removed, as after fitting to the whole
        # history: the in-sample winner is the out-of-sample loser.
        result = probability_of_backtest_overfitting(demeaned_noise(1, 100, 320), 16)
        assert result.pbo > 0.9
        assert result.logit_median < 0
        assert result.prob_oos_loss > 0.9

    def test_persistent_edge_pbo_low(self):
        rows = np.random.default_rng(2).normal(0.0, 1.0, (200, 520))
        rows[42] += 0.3
        result = probability_of_backtest_overfitting(rows, 16)
        assert result.pbo < 0.2
        assert result.logit_median > 0
        assert result.prob_oos_loss < 0.2

    def test_sixteen_blocks_all_combinations(self):
        result = probability_of_backtest_overfitting(np.random.default_rng(3).normal(0, 1, (20, 64)), 16)
        assert result.n_combinations == 12_870
        assert not result.sampled
        assert len(result.logits) == 12_870

    def test_combinations_capped_and_seeded(self):
        rows = np.random.default_rng(4).normal(0, 1, (20, 64))
        first = probability_of_backtest_overfitting(rows, 16, max_combinations=500, random_state=1)
        second = probability_of_backtest_overfitting(rows, 16, max_combinations=500, random_state=1)
        assert first.sampled
        assert first.n_combinations == 500
        assert first.pbo == second.pbo

    def test_logit_by_hand_two_strategies(self):
        # Strategy 0 wins every first half and loses every second half: with 2 blocks, one
        # combination picks 0 and finds it worst (rank 1 of 2, omega 1/3, logit -ln 2).
        rows = np.array([[1.0, 2.0, 1.5, 2.5, -1.0, -2.0, -1.5, -2.5],
                         [0.0, 0.1, 0.0, 0.1, 0.0, 0.1, 0.0, 0.1]])
        result = probability_of_backtest_overfitting(rows, 2)
        assert result.n_combinations == 2
        assert result.logits[0] == pytest.approx(-math.log(2))
        assert result.pbo == pytest.approx(1.0)

    def test_too_few_days_rejected(self):
        with pytest.raises(ValueError, match="at least 32 days"):
            probability_of_backtest_overfitting(np.zeros((3, 20)), 16)
        with pytest.raises(ValueError, match="even"):
            probability_of_backtest_overfitting(np.zeros((3, 40)), 5)


class TestScoreColumn:
    def test_nan_below_30_in_sample_trades(self):
        rows = np.random.default_rng(9).normal(0.0, 1.0, (4, 200))
        score = score_column(rows, np.array([30, 29, 100, 0]))
        assert np.isfinite(score[0])
        assert np.isnan(score[1])
        assert np.isfinite(score[2])
        assert np.isnan(score[3])

    def test_edge_scores_above_noise(self):
        rng = np.random.default_rng(10)
        rows = rng.normal(0.0, 1.0, (50, 250))
        rows[3] += 0.4
        trades = np.full(50, 100)
        score = score_column(rows, trades)
        assert np.nanargmax(score) == 3
        assert score[3] > 0.95
        assert np.nanmedian(score) < 0.2

    def test_score_equals_dsr_of_in_sample_figures(self):
        rng = np.random.default_rng(11)
        rows = rng.normal(0.05, 1.0, (10, 120))
        trials = effective_number_of_trials(rows)
        trades = np.full(10, 50)
        score = score_column(rows, trades, trials=trials)
        sharpe, skew, kurtosis = daily_moments(rows)
        variance = cluster_sharpe_variance(rows, trials.labels)
        expected = deflated_sharpe_ratio(sharpe, 120, skew, kurtosis, variance, trials.n_effective)
        assert score == pytest.approx(expected)

    def test_mismatched_counts_rejected(self):
        with pytest.raises(ValueError, match="one trade count per strategy"):
            score_column(np.zeros((3, 50)), np.ones(2))
