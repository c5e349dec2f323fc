"""Write data/sample_reviews.csv: a synthetic Flipkart-style review export written by this project.

Why synthetic: the project may only ship data its authors wrote. The generator mimics what makes
real exports hard — about 80/20 positive/negative, emoji, URLs, stray HTML, digits, typos,
run-together sentences, negated praise ("not good at all"), praise of negatives ("no complaints"),
mixed 3-star reviews, repeated one-liners and a few empty rows — in the real export's columns.

    python data/make_sample_reviews.py            # rewrites the bundled file (seeded, stable)
    python data/make_sample_reviews.py --rows 5000 --seed 7 --out /tmp/big.csv
    python data/make_sample_reviews.py --domain food --out /tmp/food.csv   # another domain: for drift tests
"""
from __future__ import annotations

import argparse
import csv
import random
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ["Reviewer Name", "Review Title", "Place of Review", "Up Votes", "Down Votes", "Month",
           "Review text", "Ratings"]
RATING_WEIGHTS = {5: 40, 4: 27, 3: 13, 2: 7, 1: 13}
PRODUCTS = ["laptop", "phone", "headphones", "smartwatch", "tablet", "speaker", "mixer", "kettle"]
ASPECTS = ["battery", "display", "performance", "sound", "build quality", "camera", "keyboard",
           "delivery", "packaging", "charging", "screen", "price", "software", "speed"]
GOOD_ASPECT = ["{a} is excellent", "{a} is really good", "loved the {a}", "{a} is superb",
               "{a} is awesome", "{a} is decent for the price", "{a} works perfectly",
               "very happy with the {a}", "{a} is fantastic", "{a} exceeded my expectations",
               "{a} is smooth", "no complaints about the {a}", "{a} is not bad at all",
               "{a} is best in this segment", "{a} is fast and reliable"]
BAD_ASPECT = ["{a} is very poor", "{a} is not good at all", "{a} stopped working in a week",
              "worst {a} ever", "{a} is disappointing", "{a} is not worth it", "{a} is terrible",
              "hate the {a}", "{a} is useless", "{a} drains too fast", "{a} is below average",
              "{a} gave problems from day one", "{a} is not up to the mark", "{a} is pathetic",
              "no support for the {a} issue"]
GOOD_OVERALL = ["Great product", "Value for money", "Highly recommended", "Must buy",
                "Totally worth it", "Very good {p}", "Best {p} under this budget",
                "Super {p}", "Happy with the purchase", "Awesome {p}, go for it",
                "Loved it", "Nice {p}", "Good quality", "Perfect for daily use", "Wonderful"]
BAD_OVERALL = ["Waste of money", "Worst {p} ever", "Do not buy this", "Not recommended",
               "Very bad experience", "Returned it", "Not worth the money", "Totally disappointed",
               "Cheap quality {p}", "Defective product received", "Never buying again",
               "Not happy at all", "Pathetic service", "Fake product", "No value for money"]
MIXED = ["Average {p}", "Okay for the price", "Good but could be better", "Just ok",
         "Not bad, not great", "Decent {p} with some issues", "Mixed feelings about it"]
ONE_LINERS = {1: ["Worst", "Bad", "Waste", "Very bad"], 2: ["Not good", "Poor"],
              3: ["Ok", "Average", "Fine"], 4: ["Good", "Nice product", "Good product"],
              5: ["Excellent", "Awesome", "Super", "Nice", "Best"]}
TITLES = {1: ["Terrible product", "Worst experience", "Useless", "Hated it", "Absolute rubbish"],
          2: ["Slightly disappointed", "Not recommended at all", "Bad quality", "Could be way better"],
          3: ["Just okay", "Fair", "Decent product", "Nice", "Average"],
          4: ["Good choice", "Really Nice", "Worth the money", "Very Good", "Pretty good"],
          5: ["Wonderful", "Brilliant", "Must buy!", "Terrific purchase", "Perfect product!",
              "Classy product", "Simply awesome"]}
GOOD_EMOJI = ["👍", "😍", "🔥", "❤️", "👌🏻", "😊", "💯", "⭐⭐⭐⭐⭐", "🙂"]
BAD_EMOJI = ["👎", "😡", "😞", "🤬", "😤", "💔", "😠"]
FILLERS = ["I bought it for my brother {n}.", "Delivered in {d} days.", "Got it for {price} rupees.",
           "Using it for {d} months now.", "Bought during the sale.", "My friend {n} uses it daily.",
           "Ordered on {d}th of the month."]
URLS = ["Unboxing video here https://youtu.be/x{d}Qa{d}", "details at www.example.com/review{d}",
        "see http://bit.ly/rv{d} for pics"]
TYPOS = {"excellent": "excelent", "awesome": "awsome", "product": "prodcut", "battery": "batery",
         "quality": "qualty", "really": "realy", "good": "gud", "performance": "perfomence",
         "recommended": "recomended", "money": "mony", "disappointing": "dissapointing",
         "worst": "worstt", "very": "vry", "display": "dispaly", "terrible": "terible"}
NAMES = ["Rahul Sharma", "Priya Singh", "Amit Kumar", "Sneha Patel", "Vikram Rao", "Anjali Gupta",
         "Arjun Nair", "Pooja Mehta", "Flipkart Customer", "Rohan Das", "Kavya Iyer", "Suresh Babu",
         "Neha Joshi", "Imran Khan", "Deepika Reddy", "Manoj Verma", "Ayesha Siddiqui"]
CITIES = ["Mumbai", "Delhi", "Bengaluru", "Chennai", "Kolkata", "Hyderabad", "Pune", "Jaipur",
          "Lucknow", "Kochi", "Indore", "Patna", "Guwahati", "Bhopal"]
FOOD_PRODUCTS = ["biryani", "paneer tikka", "masala dosa", "thali", "pizza", "chole bhature", "momos", "pav bhaji"]
FOOD_ASPECTS = ["taste", "spice level", "portion size", "freshness", "gravy", "rice", "delivery boy", "aroma",
                "temperature", "oil", "salt", "chutney", "bread", "sweetness"]
FOOD_GOOD_ASPECT = ["{a} was bilkul perfect", "{a} reminded me of ghar ka khana", "the {a} was mouthwatering",
                    "{a} was lajawab", "{a} was just right, not too much", "loved how the {a} came out",
                    "{a} was fresh and piping hot", "{a} was खूब अच्छा", "{a} tasted authentic"]
FOOD_BAD_ASPECT = ["{a} was stale and cold", "{a} tasted like yesterday's leftovers", "{a} was way too oily",
                   "{a} was bland, no flavour at all", "the {a} made me sick", "{a} was बेकार",
                   "{a} was half cooked", "{a} smelled off", "could not eat the {a}"]
FOOD_GOOD_OVERALL = ["Ordered {p} for dinner and the whole family enjoyed it", "Yummy {p}, will order again",
                     "Restaurant-quality {p} at home", "Paisa vasool {p}", "Best {p} in the area"]
FOOD_BAD_OVERALL = ["Ordered {p} and regretted it", "Inedible {p}, threw it away", "Overpriced {p}, tiny box",
                    "The {p} arrived after two hours", "Never ordering {p} from here again"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@dataclass(frozen=True)
class Domain:
    """What the reviews are about, and the phrases they praise and complain with."""

    products: list[str]
    aspects: list[str]
    good_aspect: list[str]
    bad_aspect: list[str]
    good_overall: list[str]
    bad_overall: list[str]


DOMAINS = {
    "electronics": Domain(PRODUCTS, ASPECTS, GOOD_ASPECT, BAD_ASPECT, GOOD_OVERALL, BAD_OVERALL),
    "food": Domain(FOOD_PRODUCTS, FOOD_ASPECTS, FOOD_GOOD_ASPECT, FOOD_BAD_ASPECT, FOOD_GOOD_OVERALL,
                   FOOD_BAD_OVERALL),
}


def review_text(rng: random.Random, rating: int, domain: Domain = DOMAINS["electronics"]) -> str:
    """Compose one review whose tone follows its rating, with real-world noise mixed in."""
    if rng.random() < 0.12:
        return rng.choice(ONE_LINERS[rating])
    product = rng.choice(domain.products)
    good = 0.9 if rating == 5 else 0.75 if rating == 4 else 0.5 if rating == 3 else 0.2 if rating == 2 else 0.05
    parts = []
    if rating == 3 and rng.random() < 0.5:
        parts.append(rng.choice(MIXED))
    else:
        parts.append(rng.choice(domain.good_overall if rng.random() < good else domain.bad_overall))
    for aspect in rng.sample(domain.aspects, rng.randint(1, 3)):
        parts.append(rng.choice(domain.good_aspect if rng.random() < good else domain.bad_aspect).format(a=aspect))
    if rng.random() < 0.3:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(FILLERS))
    if rng.random() < 0.04:
        parts.append(rng.choice(URLS))
    text = _join(rng, [p.format(p=product, n=rng.choice(NAMES).split()[0], d=rng.randint(2, 28),
                                price=rng.randint(8, 90) * 1000 + 499) for p in parts])
    if rng.random() < 0.05:
        text = text.replace(". ", ".<br>", 1) if rng.random() < 0.5 else f"<b>{text}</b>"
    if rng.random() < 0.25:
        text += " " + rng.choice(GOOD_EMOJI if rating >= 4 else BAD_EMOJI if rating <= 2
                                 else GOOD_EMOJI + BAD_EMOJI)
    if rng.random() < 0.3:
        text = " ".join(TYPOS.get(w, w) if rng.random() < 0.5 else w for w in text.split(" "))
    return text


def _join(rng: random.Random, parts: list[str]) -> str:
    """Sentences as people type them: sometimes capitalised and spaced, sometimes run together."""
    out = ""
    for part in parts:
        part = part[0].upper() + part[1:] if rng.random() < 0.7 else part
        sep = "" if not out else rng.choice([". ", ". ", ", ", " ", "", "!! ", "... "])
        out += sep + part
    return out + rng.choice(["", ".", "!", "!!", " ..."])


def sample_rows(n_rows: int, seed: int, domain: str = "electronics") -> list[dict[str, object]]:
    rng = random.Random(seed)
    ratings, weights = zip(*RATING_WEIGHTS.items(), strict=True)
    rows = []
    for _ in range(n_rows):
        rating = rng.choices(ratings, weights)[0]
        rows.append({
            "Reviewer Name": rng.choice(NAMES),
            "Review Title": rng.choice(TITLES[rating]),
            "Place of Review": f"Certified Buyer, {rng.choice(CITIES)}",
            "Up Votes": rng.randint(0, 300),
            "Down Votes": rng.randint(0, 60),
            "Month": f"{rng.choice(MONTHS)}, {rng.randint(2019, 2025)}",
            "Review text": "" if rng.random() < 0.01 else review_text(rng, rating, DOMAINS[domain]),
            "Ratings": rating,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=900)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("sample_reviews.csv"))
    parser.add_argument("--domain", choices=sorted(DOMAINS), default="electronics",
                        help="what the reviews are about (the bundled sample: electronics)")
    args = parser.parse_args()
    with args.out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(sample_rows(args.rows, args.seed, args.domain))
    print(f"wrote {args.rows} reviews to {args.out}")


if __name__ == "__main__":
    main()
