from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from orders.services import place_order


@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    item = request.POST.get("item", "").strip()
    if not item:
        return JsonResponse({"error": "item required"}, status=400)
    order_id, job_id = place_order(item)
    return JsonResponse({"order_id": order_id, "job_id": job_id}, status=201)
