from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=200)
    status = models.CharField(max_length=20, default="pending")  # confirmed by a job
    created_at = models.DateTimeField(auto_now_add=True)
