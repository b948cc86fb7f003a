#!/usr/bin/env python3
"""Drives Debian's headless Chromium (chromium-driver, python3-selenium) against linesign's status page while a
load runs: the page loads with no console errors, the chart moves, the refused station appears in the station
table, and a screenshot is saved. Exit 0 when every check passes; the failures on stderr otherwise.

usage: status_page_check.py URL SCREENSHOT REFUSED_STATION
"""
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service


def main():
    url, screenshot, refused_station = sys.argv[1], sys.argv[2], sys.argv[3]
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    failures = []
    try:
        driver.get(url)
        deadline = time.time() + 40
        first_chart = None
        moved = False
        while time.time() < deadline:
            state = driver.execute_script("return window.linesignStatus")
            chart = driver.execute_script("return document.getElementById('chart').toDataURL()")
            if state and state["points"] >= 2 and first_chart is None:
                first_chart = chart
            elif first_chart is not None and chart != first_chart and state["maxRate"] > 0:
                moved = True
                break
            time.sleep(0.5)
        # A few more seconds of the chart for the screenshot (not a check).
        while moved and time.time() < deadline and driver.execute_script("return window.linesignStatus")["points"] < 6:
            time.sleep(0.5)
        state = driver.execute_script("return window.linesignStatus")
        if not moved:
            failures.append("the chart did not move under load: %r" % (state,))
        if state.get("error"):
            failures.append("the page's poll failed: %s" % state["error"])
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#stations tbody tr')]"
            ".map(r => [...r.children].map(c => c.textContent))")
        station = [r for r in rows if r[0] == refused_station]
        if not station or int(station[0][2]) < 1:
            failures.append("station %r with a refusal is not in the station table: %r" % (refused_station, rows))
        health = driver.find_element("id", "health").text
        if health != "SERVING":
            failures.append("health tile says %r" % health)
        driver.save_screenshot(screenshot)
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        if errors:
            failures.append("%d console errors, the first: %r" % (len(errors), errors[:3]))
        print("status page: %d polls, %d chart points, peak %.0f certificates/s; stations %r; screenshot %s"
              % (state["polls"], state["points"], state["maxRate"], rows, screenshot))
    finally:
        driver.quit()
    for f in failures:
        print("FAIL: " + f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
