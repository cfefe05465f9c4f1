import pytest


@pytest.mark.db
def test_health_reports_database(client, backend):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json["services"]["database"] == "ok"
