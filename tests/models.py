"""Tables the test activities write to, so effects are visible across processes."""

from __future__ import annotations

from django.db import models


class Counter(models.Model):
    key = models.CharField(max_length=200, unique=True)
    value = models.IntegerField(default=0)


class Effect(models.Model):
    """One row per atomic activity effect; the test asserts exactly one per key."""

    key = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)


class Interval(models.Model):
    """When one run of an activity started and ended (time.time() on one host)."""

    key = models.CharField(max_length=200)
    started = models.FloatField()
    ended = models.FloatField()
